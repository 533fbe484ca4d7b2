"""PatchCamelyon geometry: the one home of the numbers every stage shares.

PCam patches are 96 x 96 px crops of level 2 of 40x Camelyon16 scans (0.243 um/px x 4 = 0.972 um/px);
a patch is labelled tumour when its centre 32 x 32 px hold tumour.
"""

from __future__ import annotations

#: um/px of PatchCamelyon patches.
PCAM_MPP = 0.972
#: Side of a PatchCamelyon patch, px.
PCAM_PATCH = 96
#: Side of the centre square the PCam label refers to, px.
PCAM_LABEL = 32
