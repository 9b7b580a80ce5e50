"""Code the tests share (writers of real file formats, LRN references, a fake clock); no tests here.

pytest puts ``tests/`` on ``sys.path`` (its default "prepend" import mode, ``tests/`` having no
``__init__.py``), so test modules import these as ``from helpers.formats import ...``.
"""
