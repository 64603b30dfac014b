"""The DoseSeg module's Qt-free layer: MRML scene <-> DoseSegLib, and the background CLI process.

- ``process``: runs the DoseSegLib command line in its own process group (standard library only).
- ``nodes``: volume and segmentation nodes <-> :class:`DoseSegLib.Volume`, segment colours, dose display.
- ``results``: DVH, metric and radiomics table nodes, DVH plot series and chart.
- ``pipeline``: the console API steps (temporary patient folder, CLI job, results into the scene).
"""
