"""The benchmarks behind ``alexnet bench``: data-pipeline, model, end-to-end training and explorer speed,
each against a reference measured in the same run."""
