"""Using trained models: loading a run, checkpoint or weights file (:mod:`.load`), evaluating and
predicting (:mod:`.evaluate`), what a network sees (:mod:`.analysis`), features (:mod:`.features`) and
export to ONNX / torch.export / safetensors (:mod:`.export`)."""
