"""Default configuration: the tutorial's denoising autoencoder, exactly.

MNIST scaled to [0, 1], Gaussian noise with std 0.4 clipped to [0, 1], a dense
784-256-128-64-128-256-784 autoencoder (ReLU, sigmoid output), Adam at 1e-3,
binary cross-entropy, 50 epochs of batch 128, validated on noisy test -> clean
test. The one deliberate difference: training noise is drawn afresh every epoch.

Variants import this module and change a few fields. The returned config is
locked, so a misspelled field in a variant or an override fails loudly instead
of being silently added.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default (tutorial) configuration."""
  config = ml_collections.ConfigDict()
  # TFDS dataset name; any dataset of 28x28x1 images with an `image` feature.
  config.dataset = "mnist"
  # TFDS data_dir; None uses TFDS's default (honours TFDS_DATA_DIR), then the bundled mnist.
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  # Root seed for parameter initialisation, shuffling and noise.
  config.seed = 0
  # TFDS split used for training (slices such as "train[:10%]" work).
  config.train_split = "train"
  # TFDS split used for evaluation: noisy inputs, clean targets.
  config.eval_split = "test"

  config.noise = ml_collections.ConfigDict()
  # One of gaussian, salt_and_pepper, masking.
  config.noise.type = "gaussian"
  # Gaussian std, or fraction of pixels flipped (salt_and_pepper) or zeroed (masking);
  # also the level of evaluation when training draws levels from factor_range.
  config.noise.factor = 0.4
  # Blind training: (lo, hi) draws each training image's level uniformly; () = always factor.
  config.noise.factor_range = ()
  # Blind training: noise types each training image draws its own from; () = always type.
  config.noise.mixture_types = ()
  # How training draws Gaussian values: philox (exact, fresh Philox normals) or table (0.6x the
  # pipeline's core time: rows of one fixed table; see docs/performance.md). Eval is always exact.
  config.noise.generator = "philox"
  # The table generator's table: this many float32 standard normals (64 MiB; a quarter of it
  # ended 0.05-0.09 dB lower after 50 epochs, this size 0.03).
  config.noise.table_num_values = 16_777_216

  config.model = ml_collections.ConfigDict()
  # One of dense (the tutorial's MLP), conv (Conv2D / Conv2DTranspose) or unet (no bottleneck).
  config.model.type = "dense"
  # Size of the bottleneck representation (dense and conv).
  config.model.latent_dim = 64
  # Hidden layer widths of the dense encoder; the decoder mirrors them.
  config.model.dense_hidden_units = (256, 128)
  # Filters of the conv encoder's stride-2 convolutions; the decoder mirrors them.
  config.model.conv_filters = (32, 64)
  # Conv code: dense (a Dense layer of latent_dim units) or spatial (a 3x3 convolution to a
  # 7x7 map of latent_dim / 49 channels, or 14x14 with one conv level).
  config.model.conv_bottleneck = "dense"
  # Extra stride-1 3x3 convolutions after each conv down- and upsampling.
  config.model.conv_blocks_per_level = 0
  # U-Net filters per level (28x28, 14x14, 7x7); the decoder mirrors all but the deepest.
  config.model.unet_filters = (32, 64, 128)
  # 3x3 convolutions per U-Net level.
  config.model.unet_convs_per_level = 2
  # False: a bias-free U-Net (no additive constant in any layer; configs/blind_unet.py).
  config.model.unet_use_bias = True
  # True: the U-Net runs on 2x2 blocks of pixels (space-to-depth to 14x14x4, undone at the output,
  # as FFDNet does): no 28x28 convolutions, so unet_filters name the 14x14 and 7x7 levels only.
  config.model.unet_space_to_depth = False

  config.train = ml_collections.ConfigDict()
  # Passes over the training split.
  config.train.num_epochs = 50
  # Global batch size, split evenly over all replicas.
  config.train.batch_size = 128
  # Global batch size for evaluation (the last batch is padded to full size).
  config.train.eval_batch_size = 1000
  # Adam learning rate (the peak, with a schedule).
  config.train.learning_rate = 1e-3
  # constant, or cosine: decays from learning_rate to 0 over the whole run.
  config.train.learning_rate_schedule = "constant"
  # Reconstruction loss: bce (binary cross-entropy) or mse.
  config.train.loss = "bce"
  # Evaluate on the eval split every this many epochs (and always at the end).
  config.train.eval_every_epochs = 1
  # If > 0, end the run at the first evaluation whose mean PSNR reaches this many dB: training
  # to a target quality, as MLPerf times it. 0 = train all of num_epochs.
  config.train.stop_at_eval_psnr = 0.0
  # Shuffle buffer in examples; >= the split size gives a full shuffle.
  config.train.shuffle_buffer_size = 60_000
  # If > 0, stop after this many global steps, even mid-epoch (TFX's train_steps).
  config.train.max_steps = 0
  # Training steps per tf.function call: fewer Python round trips per epoch.
  config.train.steps_per_loop = 50
  # Step-level TensorBoard scalars (running loss, PSNR, examples/s) every this many steps,
  # checked after each chunk of steps_per_loop; also a log line if the epoch has run for
  # 10 s since the last one. 0 = off.
  config.train.log_every_steps = 100
  # Checkpoints kept in workdir/checkpoints (one is written per epoch).
  config.train.checkpoints_to_keep = 3
  # Test images shown in the TensorBoard image summary and plots/denoised.png.
  config.train.num_images_to_show = 10

  config.input = ml_collections.ConfigDict()
  # tf.data service dispatcher (e.g. grpc://localhost:5050) whose workers produce the
  # training batches (docs/cloud.md); evaluation stays local. Empty = feed in-process.
  config.input.data_service_address = ""
  # Name of the service job, so that restarted trainers reattach to it; empty = a new job.
  config.input.data_service_job_name = ""
  # Seconds the service may take to serve a first test element before the run
  # stops with one line: an address that accepts connections but never serves
  # (no workers, another program) would otherwise hang the run forever.
  config.input.data_service_timeout_seconds = 120.0

  config.export = ml_collections.ConfigDict()
  # Also write the trained model in these formats at the end of training, beside saved_model/
  # (saved_model.onnx, saved_model.tflite): comma-separated onnx, litert; empty = none. onnx
  # needs the `export` extra. A finished workdir: python -m trainer.export_formats.
  config.export.formats = ""

  config.runtime = ml_collections.ConfigDict()
  # One of default, mirrored, multi_worker_mirrored, tpu.
  config.runtime.strategy = "default"
  # Comma-separated devices for mirrored (e.g. "CPU:0,CPU:1"); empty = all GPUs, else the CPU.
  config.runtime.devices = ""
  # If > 0, split the CPU into this many logical devices (to try mirrored on a laptop).
  config.runtime.num_cpu_devices = 0
  # TPU name or grpc:// address for the tpu strategy; empty = this TPU VM's own TPU.
  config.runtime.tpu_address = ""
  # Compile the training steps with XLA (a TPU compiles everything regardless); on one
  # device the whole chunk of train.steps_per_loop steps is one XLA computation.
  config.runtime.jit_compile = True
  # float32, mixed_bfloat16 (TPUs, CPUs with bf16 units) or mixed_float16 (GPUs; with loss
  # scaling): the precision of the layers' computation; weights, loss and metrics stay float32.
  config.runtime.dtype_policy = "float32"
  # Seconds a collective op may wait for the other workers before the job stops
  # (multi_worker_mirrored); a dead worker is usually noticed much sooner.
  config.runtime.collective_timeout_seconds = 300.0
  # Global steps (first, last) to trace with the TensorFlow profiler into the TensorBoard
  # train/ directory (the Profile tab), e.g. '(100, 110)'; rounded out to whole chunks of
  # train.steps_per_loop (one profiler step each), moved one chunk later if it overlaps this
  # run's first chunk (which compiles); chief only. () = off.
  config.runtime.profile_steps = ()
  # On object stores (gs://) a second trainer finding a live run marker stops; true skips that
  # check (local workdirs always have their lock). See docs/reliability.md.
  config.runtime.ignore_run_marker = False
  # Eval metric (loss, mse, psnr or ssim) reported after each evaluation to a Vertex AI tuning
  # job when the run is one of its trials (CLOUD_ML_TRIAL_ID set); the study's metricId.
  config.runtime.hypertune_metric = "psnr"

  config.lock()
  return config
