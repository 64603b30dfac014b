"""A training cohort built from a clinic's DICOM-RT archive: NRRD patients, cohort.csv and the site config."""
