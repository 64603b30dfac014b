"""DICOM-RT in and out: CT series, RTSTRUCT, RTDOSE and RTPLAN to a Case, and RTDOSE/RTSTRUCT back."""
