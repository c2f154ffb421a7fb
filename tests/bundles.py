"""A random-init model bundle for tests, written with the engine's own savers."""

from __future__ import annotations

from pathlib import Path


def build_tiny_bundle(folder: Path) -> Path:
    """Tiny DA-CLIP + tiny U-Net + a model card in ``folder``; small enough for fast tests."""
    import torch

    from engine.bundle import ModelBundle
    from engine.inference.restoration import RestorationModel, RestorerConfig
    from engine.models.daclip import DaClip, DaClipConfig, save_pretrained
    from engine.models.unet import UNetConfig

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    detector = DaClip(DaClipConfig.for_clip_model("PhotoMend-ViT-Tiny-Test"))
    save_pretrained(detector, folder)
    unet = UNetConfig(base_channels=8, channel_mult=(1, 2), attention_levels=(1,), attention_heads=2,
                      time_dim=32, cond_dim=detector.embed_dim, global_affine=True, image_stats=True)
    restorer = RestorationModel(RestorerConfig(unet=unet))
    with torch.no_grad():  # a colour head that depends on the photo's statistics (fresh, it is the identity)
        restorer.net.global_affine.out[-1].weight.normal_(0.0, 0.2)
    restorer.save(folder)
    ModelBundle(folder).write_card("# Tiny test model\n\nRandom weights, for tests only.\n")
    return folder
