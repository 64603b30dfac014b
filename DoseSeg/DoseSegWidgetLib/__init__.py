"""Parts of the DoseSeg panel (Qt and the Slicer application), kept apart to keep DoseSeg.py short."""
