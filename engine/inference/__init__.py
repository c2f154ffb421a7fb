"""Inference: a photo in, a restored photo out (detector, restorer, sampler, tiles, guard)."""
