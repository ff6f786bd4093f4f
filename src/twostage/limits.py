"""Bounds on inputs: the one table of sizes past which a value is a mistake, not a request.

Each keeps a typo or a hostile file from allocating terabytes or running for hours; each error
that applies one names the option or field. Plain constants, so the CLI can show them in its
help without importing anything heavy.
"""

MAX_PIXELS = 100_000_000  # width × height of an input image, read from its header (--max-pixels)
# width × height of a restored image (--max-output-pixels): ×4 of a 25 MP photo, a 1.2 GB 8-bit
# buffer (2.4 GB at 16 bits), checked from the input's header before anything is decoded
MAX_OUTPUT_PIXELS = 400_000_000
MIN_TILE = 8  # input pixels on a tile's side; smaller tiles are nearly all padding (--tile)
MAX_YAML_DEPTH = 64  # nesting levels of a config, recipe or preset (theirs are under 10)
MAX_KERNEL = 255  # pixels on a blur kernel's side; any real blur is far smaller
MAX_SCALE = 16  # a degradation's or a pipeline's total scale factor
MAX_RESIZE = 4  # a realistic step's resize factor (Real-ESRGAN's largest is 1.5)
# a realistic step's noise: Gaussian sigma on the 0-255 scale (Real-ESRGAN draws 1 to 30; 255 is
# noise as strong as the whole signal range) and Poisson scale (Real-ESRGAN draws 0.05 to 3)
MAX_NOISE_SIGMA = 255
MAX_POISSON_SCALE = 100
MAX_STAGE2_REPEATS = 4  # a bundle's stage-2 repeats (the paper's x2x2 uses 2)
# training steps of one network (optim.iterations): the paper trains 150k; past this it would run
# for months, so it is a typo, not a request
MAX_ITERATIONS = 10_000_000
MAX_BATCH_SIZE = 1024  # patches per training batch (data.batch_size); the paper uses 8
MAX_INSTANCES = 100  # fixed degraded copies of each training image (data.*.instances)
MAX_ABS_BSNR = 200  # dB either side of 0 (a noise step's bsnr): noise 10^±10 times the signal's
# a noise step's Poisson gain, if not 0: below it the noise variance is under 1e-12 (none), and
# near 1e-19 the photon counts overflow numpy's Poisson sampler
MIN_POISSON_GAIN = 1e-12
SEED_MAX = 2**32 - 1  # numpy.random.seed's range (run.seed)
MAX_SEEDS = 100  # `run --seeds N` / `demo --seeds N`: each seed trains every network again
MAX_NAME_BYTES = 255  # bytes in one file or folder name: the limit of ext4, XFS, Btrfs, APFS
# pixels on an image's longer side that an output format can hold (libwebp's, libjpeg's)
FORMAT_MAX_SIDE = {".webp": 16383, ".jpg": 65500, ".jpeg": 65500}
MAX_THREADS = 1024  # torch CPU threads (run.threads); torch overflows past a C int
# batch-drawing worker processes (data.num_workers); each holds a copy of the training process's
# memory pages it touches, and past the cores of the largest machines more only add start-up time
MAX_NUM_WORKERS = 64
# A run folder's metrics.csv, pointers and markers (a log line every step for 150k steps is
# ~15 MB): larger, or not a regular file (a link to /dev/zero), and it is not read.
MAX_RUN_FILE_BYTES = 1 << 28
# Bytes of decoded images a lazy dataset keeps per process (data/pairs.py `Lazy`): enough for
# the embedded photos many times over; ~30 decoded DIV2K images (2040×1356, uint8 plus target).
CACHE_BYTES = 1 << 30
