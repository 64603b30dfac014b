"""Build a training cohort from DICOM-RT exports: one pseudonymous NRRD patient per usable study.

Each patient study of the archive (see ``io.dicom.archive``) is read by the one-patient DICOM
reader, its ROI names mapped (TG-263 table and the user's map), its targets named by their
dose level (``PTV70``: RTPLAN prescription first, then ``--prescription``, then a dose in the
name) and written as ``train/`` or ``validation/`` ``P001`` ... in the NRRD layout. A study
that cannot train a dose model is excluded with its reason; the build never stops on one.
No file of the cohort holds a patient's name, ID, dates or UIDs: folders are numbered in an
order drawn from a hash, reasons and names are scrubbed of the study's identifiers.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from DoseSegLib.core.case import OARS, Case, is_ptv
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.core.names import NameMapper
from DoseSegLib.core.volume import Volume
from DoseSegLib.io.cohort.site import SiteConfig, write_site
from DoseSegLib.io.dicom.archive import ArchiveStudy, scrub, study_view

log = logging.getLogger(__name__)

NOT_AN_ORGAN = "Body"
HEAD_NECK = "head and neck"
ROW_COLUMNS = ("patient", "split", "usable", "reason", "site", "structures", "targets", "unmapped_names",
               "ct_voxels", "spacing_mm")


@dataclass
class CohortOptions:
    """How ``build_cohort`` reads, names, selects and splits the patients.

    Attributes:
        mapper: structure-name mapping (aliases); its prescriptions fill in targets without an RTPLAN dose.
        validation: validation patients (None: ``validation_fraction`` of the usable ones, at least one).
        structures: the site's organs (None: every known organ found in ``min_presence`` of the usable patients).
        site: the site's name (None: from the organs found).
        regrid: a usable case -> the case on the grid the models work on (None: the CT's own grid).
    """

    mapper: NameMapper = field(default_factory=NameMapper)
    validation: int | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    structures: tuple[str, ...] | None = None
    min_presence: float = 0.25
    site: str | None = None
    regrid: Callable[[Case], Case] | None = None

    def __post_init__(self) -> None:
        """Refuse a split or presence that would silently put (almost) every patient in validation or no organ
        in the site: a negative count, a fraction outside 0-1."""
        if self.validation is not None and self.validation < 0:
            raise DoseSegError(f"--validation {self.validation}: expected a number of patients, 0 or more")
        if not 0 < self.validation_fraction < 1:
            raise DoseSegError(f"--validation-fraction {self.validation_fraction}: expected a fraction between 0 "
                               "and 1 (e.g. 0.2)")
        if not 0 <= self.min_presence <= 1:
            raise DoseSegError(f"--min-presence {self.min_presence}: expected a fraction from 0 to 1 (e.g. 0.25)")


@dataclass
class CohortPatient:
    """One study's outcome: its cohort.csv row, and where its NRRD folder was written (None when excluded)."""

    row: dict
    folder: Path | None = None
    organs: tuple[str, ...] = ()
    names: list[tuple[str, str]] = field(default_factory=list)  # (as written, mapped to), scrubbed
    study: ArchiveStudy | None = None  # in memory only: for the key file the user may ask for


KEY_COLUMNS = ("patient", "patient_id", "study_instance_uid", "folders")


def key_rows(patients: Sequence[CohortPatient]) -> list[dict]:
    """Pseudonym -> PatientID, StudyInstanceUID and archive folders: identifying, never written into the cohort."""
    return [{"patient": p.row["patient"], "patient_id": p.study.patient_id, "study_instance_uid": p.study.study_uid,
             "folders": ";".join(sorted({str(f.parent) for f in p.study.files}))}
            for p in patients if p.study is not None]


def study_order(studies: Sequence[ArchiveStudy], seed: int) -> list[ArchiveStudy]:
    """Studies in an order that says nothing of the archive's (a hash of their identifiers)."""
    def key(study: ArchiveStudy) -> str:
        return hashlib.sha256(f"{seed}\0{study.patient_id}\0{study.study_uid}".encode()).hexdigest()

    return sorted(studies, key=key)


def known_names(mapper: NameMapper) -> set[str]:
    """Canonical organ names of the mapping (TG-263 table and the user's map), the body left out."""
    return set(mapper.aliases.values()) - {NOT_AN_ORGAN}


def _prescriptions(case: Case, given: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Each target's dose (Gy) and its source: the RTPLAN, else ``--prescription``, else the name."""
    doses, sources = dict(case.prescriptions), dict.fromkeys(case.prescriptions, "RTPLAN")
    for name in case.target_names:
        if name not in doses and name in given:
            doses[name], sources[name] = given[name], "given"
    found = replace(case, prescriptions=doses).targets
    sources.update({name: "name" for name in found if name not in sources})
    return found, sources


def training_case(case: Case, mapper: NameMapper) -> tuple[Case, dict[str, str]]:
    """The case as a training patient: known organs and targets ``PTV<Gy>`` (one per level); refuses what
    training cannot use. Returns the case and the targets column."""
    if case.dose is None:
        raise DoseSegError("no RTDOSE: the plan's dose is what the model learns")
    targets, sources = _prescriptions(case, mapper.prescriptions)
    unknown = [n for n in case.target_names if n not in targets]
    if unknown:
        raise DoseSegError(f"the dose of target {', '.join(unknown)} is unknown (no RTPLAN prescription, no dose in "
                           f"the name); give it, e.g. --prescription {unknown[0]}=GY")
    if not targets:
        raise DoseSegError("no target (PTV) with a known dose")
    low = [n for n, gy in targets.items() if gy < 10]
    if low:
        raise DoseSegError(f"target {low[0]}: prescriptions below 10 Gy are not supported")
    levels: dict[str, Volume] = {}
    column: dict[str, str] = {}
    for name, gy in targets.items():
        key = f"PTV{gy:g}"
        mask = case.structures[name]
        levels[key] = mask if key not in levels else mask.with_array(levels[key].array | mask.array)
        column.setdefault(key, f"{key}={gy:g} Gy ({sources[name]})")
    known = known_names(mapper)
    organs = {n: m for n, m in case.structures.items() if n in known and n not in case.target_names}
    return replace(case, structures={**organs, **levels}, prescriptions={}, prescription=None, original_names={},
                   notes=[], source=None), column


def case_site(organs: Sequence[str]) -> str:
    """``head and neck`` when an organ is one of the head-and-neck names table's, else ``other``."""
    from DoseSegLib.core.names import DEFAULT_ALIASES

    head_neck = set(DEFAULT_ALIASES.values()) - {NOT_AN_ORGAN}
    return HEAD_NECK if set(organs) & head_neck else ("other" if organs else "unknown")


def read_study(study: ArchiveStudy, name: str, out: Path, options: CohortOptions) -> CohortPatient:
    """Read, check and write one study as ``out/name``; an unusable one gives its scrubbed reason."""
    from DoseSegLib.io.dicom.reader import read_dicom_patient
    from DoseSegLib.io.patient import write_patient

    row: dict = {"patient": name, "split": "excluded", "usable": "no"}
    names: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="doseseg-study-") as scratch:
        view = Path(scratch) / "patient"
        try:
            case = read_dicom_patient(study_view(study, view), options.mapper)
            names = [(scrub(written, study), canonical) for canonical, written in case.original_names.items()]
            known = known_names(options.mapper)
            row["unmapped_names"] = sum(1 for n in case.structures if n not in known and not is_ptv(n)
                                        and n not in case.prescriptions)
            case, targets = training_case(case, options.mapper)
            if options.regrid is not None:
                case = options.regrid(case)
        except Exception as exc:  # one bad study never stops the build: its reason is the row
            reason = str(exc) if isinstance(exc, DoseSegError) else f"{type(exc).__name__}: {exc}"
            row["reason"] = scrub(reason, study, view)
            log.warning("%s excluded: %s", name, row["reason"])
            return CohortPatient(row, names=names, study=study)
    organs = tuple(n for n in case.structures if not is_ptv(n))
    (out / name).mkdir(parents=True)
    write_patient(out / name, replace(case, name=name))
    row.update(usable="yes", site=case_site(organs), structures=";".join(sorted(organs)),
               targets="; ".join(targets.values()), ct_voxels="x".join(map(str, case.ct.shape)),
               spacing_mm="x".join(f"{s:.2f}" for s in case.ct.spacing))
    return CohortPatient(row, out / name, organs, names, study)


def site_organs(patients: Sequence[CohortPatient], options: CohortOptions) -> tuple[str, ...]:
    """The given organs, else those in ``min_presence`` of the usable patients: OpenKBP's first (in its
    order), then the names table's order."""
    if options.structures is not None:
        return tuple(options.structures)
    counts = Counter(n for p in patients for n in p.organs)
    usable = sum(1 for p in patients if p.folder is not None)
    chosen = {n for n, c in counts.items() if usable and c / usable >= options.min_presence}
    table = list(dict.fromkeys(options.mapper.aliases.values()))
    order = {n: i for i, n in enumerate([*OARS, *table])}
    return tuple(sorted(chosen, key=lambda n: (order.get(n, len(order)), n)))


def split(usable: list[CohortPatient], options: CohortOptions) -> set[str]:
    """Pseudonyms of the validation patients: a seeded draw of ``validation`` (or the fraction) of the usable."""
    count = len(usable)
    wanted = options.validation if options.validation is not None else max(1, round(options.validation_fraction
                                                                                    * count))
    wanted = min(wanted, count - 1) if count > 1 else 0
    if options.validation is not None and wanted < options.validation:
        log.warning("only %d usable patients: %d for validation", count, wanted)
    drawn = np.random.default_rng(options.seed).permutation(count)[:wanted]
    return {usable[i].row["patient"] for i in drawn}


def pseudonyms(count: int) -> Iterator[str]:
    width = max(3, len(str(count)))
    return (f"P{i:0{width}d}" for i in range(1, count + 1))


def build_cohort(studies: Sequence[ArchiveStudy], out: Path, options: CohortOptions,
                 progress: Callable[[Iterator], Iterator] = iter) -> tuple[list[CohortPatient], SiteConfig]:
    """Write every usable study into ``out/train`` or ``out/validation`` (``out`` exists and is empty).

    Returns the patients (cohort.csv rows) and the site config; writes neither file (see ``write_cohort``).
    """
    ordered = study_order(studies, options.seed)
    staging = out / ".patients"
    patients = [read_study(study, name, staging, options)
                for study, name in progress(zip(ordered, pseudonyms(len(ordered)), strict=True))]
    usable = [p for p in patients if p.folder is not None]
    validation = split(usable, options)
    for patient in usable:
        part = "validation" if patient.row["patient"] in validation else "train"
        (out / part).mkdir(exist_ok=True)
        patient.folder = (staging / patient.row["patient"]).rename(out / part / patient.row["patient"])
        patient.row["split"] = part
    if staging.exists():
        staging.rmdir()
    organs = site_organs(patients, options)
    sites = Counter(p.row["site"] for p in usable)
    levels = sorted({float(t.split("=")[1].split()[0]) for p in usable for t in p.row["targets"].split("; ")},
                    reverse=True)
    summary = {"studies": len(patients), "usable": len(usable), "train": len(usable) - len(validation),
               "validation": len(validation), "excluded": len(patients) - len(usable), "seed": options.seed,
               "min_presence": options.min_presence, "structures_given": options.structures is not None,
               "resampled": options.regrid is not None}
    site = SiteConfig(options.site or (sites.most_common(1)[0][0] if sites else "unknown"), organs,
                      tuple(levels), summary)
    return patients, site


def write_cohort(out: Path, patients: Sequence[CohortPatient], site: SiteConfig, mapper: NameMapper) -> None:
    """``cohort.csv`` (one row per study), ``site.json`` and ``names.csv`` (each ROI name as written, what it
    was mapped to, and in how many studies: the table a physicist checks)."""
    from DoseSegLib.io.tables import write_csv

    write_csv(out / "cohort.csv", [p.row for p in patients], ROW_COLUMNS)
    write_site(out, site)
    known = known_names(mapper)
    counts = Counter(pair for p in patients for pair in set(p.names))
    rows = [{"name_as_written": written, "mapped_to": canonical if canonical in known or is_ptv(canonical)
             else "(not mapped)", "studies": count}
            for (written, canonical), count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    write_csv(out / "names.csv", rows, ("name_as_written", "mapped_to", "studies"))
