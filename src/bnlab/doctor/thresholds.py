"""Every number the doctor's rules decide with, in one place (the doctor and the monitor share them).

Units are stated per constant. Momentum is in Keras's convention (fraction kept per step);
distances between statistics are in standard deviations of the channel; "gap" is accuracy
(or prediction agreement when unlabelled) lost from train mode to inference mode.
"""

from __future__ import annotations

# --- behaviour: train mode vs inference mode, and the intervention (stale-running-stats)
GAP_THRESHOLD = 0.05  # accuracy (or prediction agreement) lost in inference mode
CONFIRM_FRACTION = 0.5  # share of the gap the recalibrated copy must win back

LOSS_GAP_FRACTION = 0.1  # no accuracy: inference loss this much above the exact-stats loss
SIGNIFICANCE_Z = 2.0  # on a sample, the gap must stand this many standard errors above zero

# --- the momentum a fix suggests
FADE_TARGET = 0.01  # the suggested momentum lets the initial values fade below this weight
MOMENTUM_RANGE = (0.5, 0.99)  # suggestions stay inside this (Keras convention)

# --- settings
TORCH_MOMENTUM_LIMIT = 0.5  # PyTorch momentum above this keeps < 50% of the running value
SMALL_BATCH = 16  # samples per BN batch below which batch statistics get noisy

# --- statistics inside BN layers
STALE_WEIGHT = 0.1  # initial moving values still weighing more than this is too much
MEAN_ERROR = 0.2  # RMS running-mean error, in population std units, that matters
VAR_RATIO = 1.5  # running / population variance beyond this factor (either way) matters
MIN_SEPARATION = 0.5  # RMS init-to-population distance needed to estimate the weight from data
DEAD_FRACTION = 1e-3  # variance below this fraction of epsilon: the channel is constant
TINY_GAMMA = 1e-3
DEGENERATE_FRACTION = 0.25  # share of a layer's channels that makes it worth reporting
INPUT_SCALE_HIGH = 4.0  # |mean| or std of the inputs above this: not unit scale
INPUT_SCALE_LOW = 0.05

# --- data-mismatch: the data against what the first BN layers learned in training
# Ratio of the data's std at a first BN layer to the std that layer saw in training (its
# moving statistics with the initial 0/1 taken out), median over channels. Staleness and
# weight drift during training move it by well under 2x in every case measured
# (benchmarks/doctor_cases.py); pixels at 0-255 instead of 0-1 move it by ~255x.
SCALE_MISMATCH = 8.0
# Median over channels of |data mean - training mean|, in training stds.
SHIFT_MISMATCH = 4.0
# Initial weight momentum**steps above which the moving statistics say too little about the
# training data to compare (then only the bounds that hold for any weight are used).
UNINFORMATIVE_WEIGHT = 0.95

# --- untrained / never-updated statistics
INIT_TOLERANCE = 1e-6  # |moving - initial| below this on every channel: never updated
CHANCE_MARGIN = 0.1  # train-mode accuracy within this of chance: the weights learned nothing

# --- batch-dependent-inference: predictions alone vs inside a batch
BATCH_DEPENDENCE = 0.02  # share of samples whose predicted class changes
BATCH_DEPENDENCE_SAMPLES = 64  # samples predicted one at a time

# --- frozen-bn-drift / ema-stale-bn: moving statistics against a reference
DRIFT_STD = 0.05  # RMS change of the moving mean, in reference stds, that is not "frozen"
DRIFT_VAR_RATIO = 1.1  # moving variance changed by more than this factor

# --- l2-with-bn
L2_SHARE_INFO = 0.01  # below this share of the loss the penalty is a remark, not a warning

__all__ = [name for name in dir() if name.isupper()]
