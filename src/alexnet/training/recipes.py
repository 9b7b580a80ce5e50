"""Recipes: named, complete sets of training defaults that config files and flags override.

Every recipe sets every option in :data:`RECIPE_FIELDS`, so a run's ``config.json`` shows which
value came from where, and ``alexnet train --help`` can list each recipe's value beside each flag.
A model's own recipe (its ``default_cfg.recipe``: ``paper`` for alexnet2012, ``torchvision`` for
alexnet-owt and keras-alexnet, ``nnott`` for the NNOTT lab's nets, ``small`` for the other small-input
nets) is used when ``--recipe`` is not given.

- ``paper``: the protocol of Krizhevsky et al. (2012), sections 3-5: batch 128, the paper's update rule
  with momentum 0.9 and weight decay 0.0005, lr 0.01 divided by 10 when the validation error stops
  improving (three times), about 90 epochs, random 224 (227) crops and mirrors, PCA lighting from
  the training set's RGB covariance with alpha ~ N(0, 0.1), the mean image subtracted, and the
  ten-patch test.
- ``torchvision``: torchvision's reference script for AlexNet (``references/classification/train.py``
  and its README: ``--lr 1e-2``, 90 epochs, lr x0.1 every 30 epochs, weight decay 1e-4, batch 32 on
  8 GPUs), with its random-resized crops, flips, fixed ImageNet mean/std and a centre-crop test.
- ``caffe``: Caffe's ``models/bvlc_alexnet`` (solver and train_val prototxt), with its init and LRN.
- ``cuda-convnet2``: Krizhevsky's own code (layer parameter files and ``convdata.py``).
- ``nnott``: the NNOTT lab's trainer (polla-fattah/nnott, ``convolutional/main.py`` and ``trainer.py``)
  where this package has its option, for ``nnott-alexnet`` and ``nnott-lenet``: batch 64, weight decay
  1e-4 on every parameter, shifts of up to 2 pixels, the training set's mean and std; SGD with
  momentum and a cosine decay instead of its Adam (lr 5e-4) and two-step decay (x0.5 at half the
  epochs, x0.1 at three quarters), 20 epochs instead of its 8 (its 8 are over MNIST's 54,000 images).
- ``small``: what trains the small-input models well on digits / MNIST / CIFAR-10 in minutes (measured
  on the embedded digits: about 98-99% test top-1 in 20 epochs, see the README): batch 32, SGD, lr 0.02 with
  one warm-up epoch and a cosine decay, weight decay 5e-4, shifts by zero-pad-and-crop, per-channel
  standardization.
"""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    "paper": {
        "batch_size": 128,           # images per step (section 5)
        "optimizer": "paper-sgd",    # v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v (section 5)
        "lr": 0.01,                  # "initialized at 0.01"
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "plateau",       # "divide the learning rate by 10 when the validation error rate
        "patience": 4,               #  stopped improving": 4 epochs is our reading; the paper gives none
        "max_drops": 3,              # "reduced three times prior to termination"
        "plateau_threshold": 0.0,    # percentage points of val top-1 error that count as better
        "lr_factor": 0.1,
        "step_size": 30,             # unused by plateau
        "warmup_epochs": 0,
        "epochs": 90,                # "roughly 90 cycles through the training set"
        "normalize": "paper",        # subtract the mean image; pixels stay 0..255 (section 2)
        "crop": "random",            # random 224 (227) patches of the 256x256 image (section 4.1)
        "lighting": "data",          # PCA of the training set's RGB pixels (section 4.1)
        "lighting_std": 0.1,         # alpha ~ N(0, 0.1)
        "lighting_form": "paper",    # eigvec @ (alpha * eigval), as printed
        "mean_crop": "same",         # "subtracting the mean activity ... from each pixel"
        "bias_lr_mult": 1.0,         # the update rule of section 5 applies to every parameter alike
        "bias_decay_mult": 1.0,
        "tta": "10crop",             # four corners + centre, and their mirrors (section 4.1)
    },
    "torchvision": {
        "batch_size": 256,           # 8 GPUs x 32 in the reference script
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "step",
        "patience": 5,               # unused by step
        "max_drops": 3,              # unused by step
        "plateau_threshold": 0.0,    # unused by step
        "step_size": 30,             # epochs (--lr-step-size 30)
        "lr_factor": 0.1,            # --lr-gamma 0.1
        "warmup_epochs": 0,
        "epochs": 90,
        "normalize": "imagenet",     # mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
        "crop": "random-resized",    # scale (0.08, 1), ratio (3/4, 4/3)
        "lighting": "none",
        "lighting_std": 0.1,         # unused without lighting
        "lighting_form": "paper",    # unused without lighting
        "mean_crop": "same",         # unused without a mean image
        "bias_lr_mult": 1.0,
        "bias_decay_mult": 1.0,      # torch.optim.SGD decays every parameter
        "tta": "center",
    },
    "small": {
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 1,          # linear from lr/35 over the first epoch
        "patience": 5,               # unused by cosine
        "max_drops": 3,              # unused by cosine
        "plateau_threshold": 0.0,    # unused by cosine
        "lr_factor": 0.1,            # unused by cosine
        "step_size": 30,             # unused by cosine
        "epochs": 20,
        "normalize": "standard",     # per-channel mean and std of the training split
        "crop": "random",            # zero-pad then crop: shifts of a few pixels
        "lighting": "none",
        "lighting_std": 0.1,         # unused without lighting
        "lighting_form": "paper",    # unused without lighting
        "mean_crop": "same",         # unused without a mean image
        "bias_lr_mult": 1.0,
        "bias_decay_mult": 1.0,
        "tta": "center",
    },
    # Caffe's models/bvlc_alexnet: solver.prototxt and train_val.prototxt. Caffe counts iterations of
    # batch 256; on ILSVRC-2012's 1,281,167 training images 100,000 iterations are 19.98 epochs and
    # max_iter 450,000 is 89.9, so whole epochs: 20 and 90.
    "caffe": {
        "batch_size": 256,           # batch_size: 256 (train_val.prototxt)
        "optimizer": "paper-sgd",    # Caffe's SGD: V <- momentum V - lr (grad + decay W); W <- W + V
        "lr": 0.01,                  # base_lr: 0.01
        "momentum": 0.9,             # momentum: 0.9
        "weight_decay": 5e-4,        # weight_decay: 0.0005
        "bias_lr_mult": 2.0,         # every bias: lr_mult: 2
        "bias_decay_mult": 0.0,      # every bias: decay_mult: 0
        "schedule": "step",          # lr_policy: "step"
        "step_size": 20,             # stepsize: 100000 iterations
        "lr_factor": 0.1,            # gamma: 0.1
        "patience": 5,               # unused by step
        "max_drops": 3,              # unused by step
        "plateau_threshold": 0.0,    # unused by step
        "warmup_epochs": 0,
        "epochs": 90,                # max_iter: 450000
        "normalize": "paper",        # mean_file: imagenet_mean.binaryproto, pixels 0..255
        "mean_crop": "same",         # the data layer crops the mean where it crops the image
        "crop": "random",            # crop_size: 227, mirror: true
        "lighting": "none",          # no colour augmentation
        "lighting_std": 0.1,         # unused without lighting
        "lighting_form": "paper",    # unused without lighting
        "tta": "center",             # the published 57.1% top-1 is the centre crop
    },
    # Krizhevsky's cuda-convnet2: layers/layer-params-*.cfg (epsW 0.01, epsB 0.02, momW/momB 0.9,
    # wc 0.0005 on weights, 0 on biases), convdata.py (crops, mirrors, centre-cropped mean, lighting
    # with color_noise 0.1) and its multiview test; the lr was divided by 10 by hand when the
    # validation error stopped improving, as the paper says.
    "cuda-convnet2": {
        "batch_size": 128,           # --mini 128
        "optimizer": "paper-sgd",    # inc <- mom inc - eps (grad + wc w); w <- w + inc
        "lr": 0.01,                  # epsW 0.01
        "momentum": 0.9,             # momW 0.9, momB 0.9
        "weight_decay": 5e-4,        # wc 0.0005
        "bias_lr_mult": 2.0,         # epsB 0.02
        "bias_decay_mult": 0.0,      # biases carry no wc
        "schedule": "plateau",
        "patience": 4,               # our reading of "stopped improving", as the paper recipe
        "max_drops": 3,
        "plateau_threshold": 0.0,
        "lr_factor": 0.1,
        "step_size": 30,             # unused by plateau
        "warmup_epochs": 0,
        "epochs": 90,
        "normalize": "paper",        # the mean image, pixels 0..255
        "mean_crop": "center",       # convdata.py subtracts the mean's centre crop from every crop
        "crop": "random",            # random 224 crops and mirrors
        "lighting": "data",          # PCA of the training pixels
        "lighting_std": 0.1,         # color_noise 0.1
        "lighting_form": "cuda-convnet2",  # stdevs = sqrt(eigenvalues); batch x 1 / (1 + 0.1)
        "tta": "10crop",             # multiview test: four corners, centre, and mirrors
    },
    # The NNOTT lab (polla-fattah/nnott): convolutional/main.py builds Adam(lr=5e-4, weight_decay=1e-4) and
    # trains 8 epochs of batch 64 with shift / rotation / flip / noise augmentation (common/augment.py);
    # its trainer halves the lr at half the epochs and sets it to a tenth at three quarters.
    "nnott": {
        "batch_size": 64,            # --batch-size 64
        "optimizer": "sgd",          # nnott: Adam; SGD with momentum is what this package offers
        "lr": 0.04,                  # the small recipe's 0.02 at batch 32, scaled to batch 64
        "momentum": 0.9,
        "weight_decay": 1e-4,        # nnott's weight_decay=1e-4, added to every parameter's gradient
        "schedule": "cosine",        # nnott: x0.5 at epochs/2, x0.1 at 3 epochs/4; cosine spans the same
        "warmup_epochs": 0,          # nnott: none
        "patience": 5,               # unused by cosine
        "max_drops": 3,              # unused by cosine
        "plateau_threshold": 0.0,    # unused by cosine
        "lr_factor": 0.1,            # unused by cosine
        "step_size": 30,             # unused by cosine
        "epochs": 20,                # nnott: 8 over MNIST's 54,000 training images; digits have 1,078
        "normalize": "standard",     # nnott: (x / 255 - mean) / std of the training images
        "crop": "random",            # zero-pad and crop: nnott's --augment-max-shift 2
        "lighting": "none",
        "lighting_std": 0.1,         # unused without lighting
        "lighting_form": "paper",    # unused without lighting
        "mean_crop": "same",         # unused without a mean image
        "bias_lr_mult": 1.0,
        "bias_decay_mult": 1.0,      # nnott decays biases and batch-norm parameters alike
        "tta": "center",             # nnott evaluates the plain test images
    },
}

# Model options a recipe sets, where the model has them (given --opt values win).
RECIPE_MODEL_OPTIONS: dict[str, dict] = {
    "caffe": {"init": "caffe", "lrn_mode": "caffe",    # N(0, 0.01), biases 0 / 1 / 0.1; k=1, alpha / n
              "lrn_per_tower": False,                  # norm1 / norm2 read all 96 / 256 maps
              "dropout_form": "inverted"},             # dropout_layer.cpp: x 1/(1-p) training, copy test
    "cuda-convnet2": {"lrn_mode": "cuda-convnet",      # scale / size, minDiv (k) = 2
                      "lrn_order": "cuda-convnet2",    # conv1's rnorm1 before its ReLU
                      "dropout_form": "paper"},        # drop without rescaling, x0.5 at test
    "torchvision": {"dropout_form": "inverted"},       # nn.Dropout
}

RECIPE_FIELDS = tuple(RECIPES["paper"])
assert all(set(r) == set(RECIPE_FIELDS) for r in RECIPES.values()), "every recipe sets every option"
