"""``photomend train {daclip,restorer} ...``: each trainer module adds its own arguments."""

from __future__ import annotations

import importlib

TRAINERS = {"daclip": "engine.training.daclip", "restorer": "engine.training.restorer"}


def register(sub) -> None:
    parser = sub.add_parser("train", help="train the DA-CLIP detector or the restorer")
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, module_name in TRAINERS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        p = stages.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(func=module.main)
