"""Training a model: the configuration and its resolution (:mod:`.config`, :mod:`.recipes`), the loop
(:mod:`.trainer`, :mod:`.engine`, :mod:`.schedule`), the run folder (:mod:`.rundir`) and the start of a run
(:mod:`.launch`)."""
