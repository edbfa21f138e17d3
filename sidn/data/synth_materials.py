"""Materials of the embedded default dataset (``sidn.data.synth``): textures and their defects.

Five materials modelled on the MVTec AD texture categories, one module each: carpet (2/2
twill of twisted yarn, colour), grid (woven wire mesh, grayscale), leather (pebbled grain
rendered from a height map, colour), tile (terrazzo: polished matrix with stone chips, colour)
and wood (growth rings with knots and pores, colour). :data:`TEXTURES` and :data:`DEFECTS`
name them for ``sidn.data.synth``.

Every texture is an object built from one ``numpy.random.Generator``: the constructor
draws everything random (phase, scale, orientation, colours, noise fields), and
``render(...)`` is deterministic. Each defect function takes the texture object, its clean
rendering, a generator and two flags (``low``: reduced visibility, ``small``: small extent)
and returns the defective float image plus how to turn the change into a mask (closing
radius, hole filling). Defects change the texture itself: they call ``render`` a second time
with a modification (a displacement field, removed wires, an extra height map, an albedo
change); wires are removed or displaced, the carpet is cut open and shows its backing, stains
multiply the texture under them (so it stays visible), cracks, scratches, folds and dents are
height changes that are shaded with the image's light direction. The ground truth is computed
by :func:`sidn.data.synth_mask.change_mask` from the difference between the clean and the
defective rendering (the pixels the defect visibly changed), never drawn separately.

Images are float32 in [0, 1]: [H, W] for grid, [H, W, 3] RGB for the coloured ones.
Lengths are given for a 512 px image and scaled by ``size / 512``. The SIDN paper (Sec. IV-A)
evaluates on MVTec AD textures; this generator is our stand-in for that data set when no real
data are available. These are test-set defects (the evaluation data); they are unrelated to
the training-time defect generation module of the paper (eq. 1, ``sidn.data.dgm``). Shared
building blocks: ``synth_fields`` (noise, coordinates, shading), ``synth_shapes`` (defect
geometry), ``synth_stains`` and ``synth_mask``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sidn.data.synth_carpet import CarpetTexture, carpet_color, carpet_cut, carpet_hole, carpet_thread
from sidn.data.synth_grid import GridTexture, grid_bent, grid_broken, grid_glue
from sidn.data.synth_leather import LeatherTexture, leather_color, leather_cut, leather_fold, leather_poke
from sidn.data.synth_tile import TileTexture, tile_crack, tile_glue_strip, tile_oil
from sidn.data.synth_wood import WoodTexture, wood_color, wood_hole, wood_liquid, wood_scratch

DefectFn = Callable[..., tuple[np.ndarray, int, bool]]

TEXTURES = {
    "carpet": CarpetTexture,
    "grid": GridTexture,
    "leather": LeatherTexture,
    "tile": TileTexture,
    "wood": WoodTexture,
}

DEFECTS: dict[str, dict[str, DefectFn]] = {
    "carpet": {"color": carpet_color, "cut": carpet_cut, "hole": carpet_hole, "thread": carpet_thread},
    "grid": {"bent": grid_bent, "broken": grid_broken, "glue": grid_glue},
    "leather": {"color": leather_color, "cut": leather_cut, "fold": leather_fold, "poke": leather_poke},
    "tile": {"crack": tile_crack, "glue_strip": tile_glue_strip, "oil": tile_oil},
    "wood": {"color": wood_color, "hole": wood_hole, "liquid": wood_liquid, "scratch": wood_scratch},
}
DEFECT_TYPES: dict[str, list[str]] = {cat: list(d) for cat, d in DEFECTS.items()}
