"""Image IO: :mod:`~engine.io.reader` (read_rgb, load_image, LoadedImage, the limits and read errors),
:mod:`~engine.io.codecs` (16-bit PNG/TIFF, EXIF tags, CMYK) and :mod:`~engine.io.writer` (save_image,
output formats).
"""
