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
- ``cuda-convnet2``: Krizhevsky's own code with its two-tower files (``layers-imagenet-2gpu-model.cfg`` and
  ``layer-params-imagenet-2gpu-model.cfg``, the paper's net): lr 0.02 (biases 0.04, no weight decay)
  falling in cuda-convnet2's fixed ``dexp`` stages to 1/250 (biases 1/25), inverted dropout, LRN before
  conv1's ReLU, a within-map normalization after conv2's LRN, N(0, 0.03) for conv3-conv5.
- ``cuda-convnet2-1gpu``: the same code with its one-GPU files (``layers-imagenet-1gpu.cfg``,
  ``layer-params-imagenet-1gpu.cfg``): their 64-192-384-256-256 net (``alexnet2012`` with ``towers=1``
  and those ``kernels``), lr 0.01 (biases 0.02) to 1/250 (biases 1/10), the paper's dropout, fc8's
  biases -7. What both leave to the command line (epochs, the colour noise, the ten-patch test) is the
  paper's value here; each option's line says so.
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

# What Krizhevsky's cuda-convnet2 (github.com/akrizhevsky/cuda-convnet2, commit 3238bf0) decides in its code,
# the same whichever layer files it runs: each value with the file and line it is read from. What the code
# leaves to the command line is marked "command line": there the paper's value is used, and the option's
# default in the repository named.
_CONVNET2_CODE = {
    "batch_size": 128,           # convnet.py:253 add_option("mini", ..., default=128)
    "optimizer": "paper-sgd",    # cudaconvnet/src/weights.cu:290 inc <- mom inc + eps grad - wc eps w;
                                 # :311 w += inc
    "bias_decay_mult": 0.0,      # cudaconvnet/src/layer.cu:743 biases: Weights(..., 0, 0, momB): wc 0
    "patience": 4,               # unused by dexp
    "max_drops": 3,              # unused by dexp
    "plateau_threshold": 0.0,    # unused by dexp
    "lr_factor": 0.1,            # unused by dexp
    "step_size": 30,             # unused by dexp
    "warmup_epochs": 0,          # cudaconvnet/src/lr.cu:94-113: dexp has no warm-up
    "epochs": 90,                # command line: --epochs (convnet.py:273 default 50000); the paper's 90
    "normalize": "paper",        # convdata.py:192 data -= data_mean_crop, pixels 0..255
    "mean_crop": "center",       # convdata.py:104 data_mean_crop: the mean image's centre square
    "crop": "random",            # cudaconvnet/src/jpeg.cpp:58, :117-121 random crop, random mirror
    "lighting": "data",          # convdata.py:81-82 color_pca (make-data.py:150: make-data/input_meta)
    "lighting_std": 0.1,         # command line: --color-noise (convnet.py:263 default 0.0, no noise);
                                 # the paper's alpha ~ N(0, 0.1)
    "lighting_form": "cuda-convnet2",  # convdata.py:74 randn x stdevs @ eigvecs.T, :181 x color_noise,
                                 # :183 batch x 1 / (1 + color_noise)
    "tta": "10crop",             # command line: --multiview-test (convnet.py:258 default 0);
                                 # cudaconvnet/src/jpeg.cpp:49-55 four corners, centre, mirrors
}

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
        "dexp_factor": 250.0,         # unused by plateau
        "dexp_steps": 4,              # unused by plateau
        "bias_dexp_factor": 25.0,     # unused by plateau
        "bias_dexp_steps": 2,         # unused by plateau
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
        "dexp_factor": 250.0,         # unused by step
        "dexp_steps": 4,              # unused by step
        "bias_dexp_factor": 25.0,     # unused by step
        "bias_dexp_steps": 2,         # unused by step
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
        "dexp_factor": 250.0,         # unused by cosine
        "dexp_steps": 4,              # unused by cosine
        "bias_dexp_factor": 25.0,     # unused by cosine
        "bias_dexp_steps": 2,         # unused by cosine
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
        "dexp_factor": 250.0,         # unused by step
        "dexp_steps": 4,              # unused by step
        "bias_dexp_factor": 25.0,     # unused by step
        "bias_dexp_steps": 2,         # unused by step
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
    # Krizhevsky's cuda-convnet2 with its two-tower files (the paper's net): what the code decides (above),
    # and each value of the files with its line: params-2gpu = layers/layer-params-imagenet-2gpu-model.cfg.
    "cuda-convnet2": {
        **_CONVNET2_CODE,
        "lr": 0.02,                  # params-2gpu:2 epsW=dexp[base=0.02;tgtFactor=250;numSteps=4]
        "momentum": 0.9,             # params-2gpu:4-5 momW=0.9, momB=0.9
        "weight_decay": 5e-4,        # params-2gpu:6 wc=0.0005
        "bias_lr_mult": 2.0,         # params-2gpu:3 epsB=dexp[base=0.04;...]: 0.04 / 0.02
        "schedule": "dexp",          # params-2gpu:2-3 epsW=dexp[...], epsB=dexp[...]
        "dexp_factor": 250.0,        # params-2gpu:2 tgtFactor=250
        "dexp_steps": 4,             # params-2gpu:2 numSteps=4
        "bias_dexp_factor": 25.0,    # params-2gpu:3 epsB=dexp[base=0.04;tgtFactor=25;numSteps=2]
        "bias_dexp_steps": 2,        # params-2gpu:3 numSteps=2
    },
    # The same code with its one-GPU files (the 64-192-384-256-256 net of "One weird trick"):
    # params-1gpu = layers/layer-params-imagenet-1gpu.cfg.
    "cuda-convnet2-1gpu": {
        **_CONVNET2_CODE,
        "lr": 0.01,                  # params-1gpu:6 epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]
        "momentum": 0.9,             # params-1gpu:2-3 momW=0.9, momB=0.9
        "weight_decay": 5e-4,        # params-1gpu:4 wc=0.0005
        "bias_lr_mult": 2.0,         # params-1gpu:7 epsB=dexp[base=0.02;...]: 0.02 / 0.01
        "schedule": "dexp",          # params-1gpu:6-7 epsW=dexp[...], epsB=dexp[...]
        "dexp_factor": 250.0,        # params-1gpu:6 tgtFactor=250
        "dexp_steps": 4,             # params-1gpu:6 numSteps=4
        "bias_dexp_factor": 10.0,    # params-1gpu:7 epsB=dexp[base=0.02;tgtFactor=10;numSteps=2]
        "bias_dexp_steps": 2,        # params-1gpu:7 numSteps=2
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
        "dexp_factor": 250.0,         # unused by cosine
        "dexp_steps": 4,              # unused by cosine
        "bias_dexp_factor": 25.0,     # unused by cosine
        "bias_dexp_steps": 2,         # unused by cosine
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
# The cuda-convnet2 entries' files: layers-2gpu = layers/layers-imagenet-2gpu-model.cfg, params-2gpu =
# layers/layer-params-imagenet-2gpu-model.cfg, layers-1gpu = layers/layers-imagenet-1gpu.cfg, params-1gpu =
# layers/layer-params-imagenet-1gpu.cfg.
RECIPE_MODEL_OPTIONS: dict[str, dict] = {
    "caffe": {"init": "caffe", "lrn_mode": "caffe",    # N(0, 0.01), biases 0 / 1 / 0.1; k=1, alpha / n
              "lrn_per_tower": False,                  # norm1 / norm2 read all 96 / 256 maps
              "dropout_form": "inverted"},             # dropout_layer.cpp: x 1/(1-p) training, copy test
    "cuda-convnet2": {
        "towers": 2,                     # layers-2gpu:9-33 conv1a on gpu 0, conv1b on gpu 1, 48 filters each
        "lrn_per_tower": True,           # layers-2gpu:35-45 rnorm1a reads conv1a's 48 channels only
        "lrn_mode": "cuda-convnet",      # params-2gpu:156-159 scale=0.0001 minDiv=2; layer.py:1331 / size
        "lrn_order": "cuda-convnet2",    # layers-2gpu:35-63 rnorm1a reads conv1a; pool1a carries neuron=relu
        "cnorm": True,                   # layers-2gpu:107-117 cnorm2a type=rnorm size=5 after rnorm2a;
                                         # params-2gpu:176-178 scale=0.001 pow=0.75
        "init": "cuda-convnet2",         # layers-2gpu:143, :172, :200 initW=0.03 on conv3-conv5
        "dropout_form": "inverted",      # layers-2gpu:256-262 type=dropout: cudaconvnet/include/layer.cuh
                                         # :634-643 kept units x 1 / keep; src/layer.cu:1333-1342 test: copy
    },
    "cuda-convnet2-1gpu": {
        "towers": 1,                     # layers-1gpu:9-20 one conv1 on gpu 0
        "kernels": "64,192,384,256,256",  # layers-1gpu:13, :40, :68, :81, :95 filters=
        "lrn_mode": "cuda-convnet",      # params-1gpu:83-91 scale=0.0001 minDiv=2
        "lrn_order": "cuda-convnet2",    # layers-1gpu:22-35 rnorm1 reads conv1; pool1 carries neuron=relu
        "cnorm": False,                  # layers-1gpu: no rnorm layer
        "init": "cuda-convnet2-1gpu",    # layers-1gpu:73, :87, :100 initW=0.03; :144 initB=-7 on fc1000
        "dropout_form": "paper",         # layers-1gpu:123, :136 type=dropout2: cudaconvnet/src/layer.cu
                                         # :1374-1383 drops without rescaling, x keep (0.5) at test time
    },
    "torchvision": {"dropout_form": "inverted"},       # nn.Dropout
}

RECIPE_FIELDS = tuple(RECIPES["paper"])
assert all(set(r) == set(RECIPE_FIELDS) for r in RECIPES.values()), "every recipe sets every option"
