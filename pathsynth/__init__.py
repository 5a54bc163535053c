"""PathSynth: verified synthetic colorectal histopathology images for clinical education."""

from .tissues import ABBREVIATIONS, DISPLAY_NAMES, LABELS, NUM_TISSUES, TISSUES, Tissue, get_tissue, tissue_index

__version__ = "0.1.0"
__all__ = ["ABBREVIATIONS", "DISPLAY_NAMES", "LABELS", "NUM_TISSUES", "TISSUES", "Tissue", "get_tissue",
           "tissue_index", "__version__"]
