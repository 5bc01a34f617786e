"""Export a folding steering (one residual vector at one layer) to the engines that run control vectors.

    saebasis export run=<dir> format=gguf|steering-vectors|repeng|lm-eval out=<path> strength=<s>
    saebasis.export.export(run_or_intervention, path, format, strength)

Layer and strength mapping: saebasis/export/vector.py and docs/export.md.
"""

from saebasis.export.command import FORMATS, export, export_command
from saebasis.export.vector import ExportVector, block_output_index, export_vector

__all__ = ["FORMATS", "ExportVector", "block_output_index", "export", "export_command", "export_vector"]
