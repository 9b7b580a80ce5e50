"""``alexnet train``, ``evaluate`` and ``predict``."""


def add_train_parser(sub) -> None:
    sub.add_parser("train", help="train a model (not built yet)")


def add_evaluate_parser(sub) -> None:
    sub.add_parser("evaluate", help="evaluate a checkpoint (not built yet)")


def add_predict_parser(sub) -> None:
    sub.add_parser("predict", help="top-5 classes of images (not built yet)")
