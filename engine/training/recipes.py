"""The trainers' recipes: ``training/*.toml`` loaded (:func:`engine.training.common.load_recipe`) into
these typed dataclasses. Torch-free, so that the campaign can read and check its recipes before it
checks that every package the trainers need is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.models.configs import IRSDEConfig, UNetConfig


@dataclass(frozen=True)
class DaClipRecipe:
    """Hyper-parameters of ``photomend train daclip`` (``training/daclip.toml``)."""

    clip_model: str = "PhotoMend-RN-96"
    crop: int = 96
    views: str = "photo"          # "photo": global views + native crops of degraded regions
                                  # (engine.training.synthetic.PhotoViews); "crop": degraded crops;
                                  # "pool": engine.training.region_pool (detector v2)
    presence: bool = False        # train a presence head (sigmoid per name, BCE) with the slot loss
    presence_weight: float = 1.0
    renderers: tuple[str, ...] = ("project", "albumentations")  # "pool" views: the renderer mix
    n_crops: int = 3              # "pool" views: native crops per region (plus its global view)
    pool_size: int = 2000
    pool_refresh: int = 1         # regions re-rendered per step
    max_zoom_out: float = 4.0
    photo_jitter: float = 0.0     # "pool" views: recolour the clean regions (region_pool.jitter_photo)
    photo_turns: bool = False     # "pool" views: turn the clean regions by multiples of 90 degrees
    photo_highlights: float = 0.0  # "pool" views: share of clean regions over-exposed (region_pool.clip_highlights)
    max_side: int = 1536          # training photos are read at most this large
    val_every: int = 0            # "pool" views with --val: held-out figures every this many steps
    minutes: float = 0.0          # > 0: a wall-clock budget for the run. The stages share it as
                                  # base_steps : control_steps; each stage's cosine follows the larger
                                  # of its step and time progress, and ends when its time is up (the
                                  # step counts become upper bounds). For a busy or unknown machine.
    val_regions: int = 240
    region_min: int = 96          # "photo" views: short side of the degraded region, log-uniform
    region_max: int = 384
    views_per_region: int = 4     # the region's global view, then native crops
    min_crop_scale: float = 0.5   # "crop" views: zoom-out of the crop
    preset: str = "train"
    batch_size: int = 32
    base_steps: int = 1200
    base_lr: float = 5e-4
    base_content_weight: float = 0.5
    base_hq_fraction: float = 0.5
    train_token_embedding: bool = False
    control_steps: int = 2400
    control_lr: float = 3e-4
    content_weight: float = 0.5
    content_fraction: float = 0.25
    control_trains_text: bool = True
    prototype_separation: float = 1.0  # weight of the term that keeps the text prototypes apart
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 20
    num_workers: int = 0
    seed: int = 0
    amp: bool = True
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default)

    @property
    def total_steps(self) -> int:
        return self.base_steps + self.control_steps


@dataclass(frozen=True)
class RestorerRecipe:
    """Training recipe (``training/restorer.toml``). ``steps`` is the budget shared by the ablation.

    ``seed24_fraction``: share of samples drawn from the ``seed24`` preset on top of ``preset``.
    ``deterministic_fraction``: share of samples trained at the one-step input (t = T, x_T = mu).
    ``val_dir``: clean validation photos ("" = the ``val`` folder beside ``--data``).
    ``threads``: torch CPU threads (0 = torch's default).
    ``pool_size``: above 0, the shared region pool (restorer v2, see the module docstring):
    ``pool_size`` regions (short side ``region_min`` to ``region_max``, a photo seen at 1x to
    1/``max_zoom_out`` of its stored size, photos read at most ``max_side``) degraded by
    ``renderers``, ``pool_refresh`` of them re-rendered per step; ``seed24_fraction`` of them from
    the seed24 preset; ``identity_fraction`` identity samples (``identity_mild_share`` of them mildly
    degraded, by up to ``identity_mild_max``); ``label_condition_fraction`` of the pairs conditioned
    on their true names, ``false_name_fraction`` of all entries on their true names plus an invented
    one (target unchanged); ``pool_processes`` processes render the first fill (0: ``threads``).
    ``val_images`` regions per validation set, ``val_heldout``: also the held-out renderer's set.
    ``val_photos``: a ``photomend synth`` folder of whole degraded held-out photos (or ``--val-photos``):
    every ``val_photos_every`` steps (and at the end) ``val_photos_limit`` of them, spread over the
    combinations, are restored whole at steps 1 through the runtime's path and the issue's group
    figures are logged (``"photos"``), with the guard when the run is conditioned. Regions and whole
    photos can disagree (restorer v2 run 4: regions rose while whole photos fell).
    ``minutes``: above 0, a wall-clock budget: the cosine follows the larger of step and time
    progress and the run ends when the time is up (``steps`` becomes an upper bound); carried
    across resumes. ``log_every``: steps between ``log.jsonl`` lines.
    ``region_max``: 0 draws degraded crops (:class:`~engine.training.synthetic.SyntheticPairs`, the
    condition from the crop as one view); above 0, native crops of degraded photo regions
    (:class:`~engine.training.synthetic.RegionPairs`) conditioned by :meth:`Detector.analyze` of the
    region, the runtime's path.
    ``loss``: ``mse`` (the batch MSE on x0, as in the study) or ``relative_mse`` (each image's MSE on
    x0 weighted by ``0.05 / (input MSE + 0.05)``, fixed per crop: dark or hazy crops with huge errors
    no longer drown the lightly degraded ones, which the mean PSNR counts equally), or ``psnr_mse``
    (each image's MSE on x0 divided by its own current MSE, held constant: the gradient of the mean
    per-image log-MSE, i.e. of the mean PSNR; every image counts by its relative error, so a nearly
    clean crop that the network worsens costs as much as a dark crop that it fails to brighten).
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    sde: IRSDEConfig = field(default_factory=IRSDEConfig)
    steps: int = 6000
    batch_size: int = 8
    crop: int = 128
    preset: str = "train"
    seed24_fraction: float = 0.0
    min_crop_scale: float = 1.0
    region_max: int = 0       # > 0: crops are cut from regions up to this short side degraded at their
                              # own scale, conditioned on the detector's analysis of the whole region
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    deterministic_fraction: float = 0.5
    condition_swap: float = 0.0  # share of samples conditioned on another sample's condition (a wrong
                                 # detection), so the network checks the condition against the pixels
    loss: str = "mse"
    val_dir: str = ""
    val_images: int = 48
    val_crop: int = 128
    val_preset: str = "seed24"
    val_every: int = 500
    checkpoint_minutes: float = 3.0
    threads: int = 0
    seed: int = 0
    amp: bool = True
    pool_size: int = 0
    pool_refresh: int = 1
    pool_processes: int = 0
    renderers: tuple[str, ...] = ("project", "albumentations")
    region_min: int = 128
    max_zoom_out: float = 4.0
    photo_jitter: float = 0.0
    photo_turns: bool = False
    photo_highlights: float = 0.0
    max_side: int = 1536
    identity_fraction: float = 0.0
    identity_mild_share: float = 0.5
    identity_mild_max: float = 0.2
    label_condition_fraction: float = 0.0
    false_name_fraction: float = 0.0  # entries conditioned on their true names plus an invented one
    val_heldout: bool = True
    val_photos: str = ""
    val_photos_limit: int = 72
    val_photos_every: int = 1000
    minutes: float = 0.0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.pool_size > 0 and not self.crop <= self.region_min <= self.region_max:
            raise ValueError(f"pool_size > 0 needs crop <= region_min <= region_max, got {self.crop}, "
                             f"{self.region_min}, {self.region_max}")
        if self.minutes < 0:
            raise ValueError(f"minutes must be 0 (no budget) or more, got {self.minutes}")
        if self.val_photos_limit < 1 or self.val_photos_every < 1:
            raise ValueError(f"val_photos_limit and val_photos_every must be at least 1, got "
                             f"{self.val_photos_limit}, {self.val_photos_every}")
