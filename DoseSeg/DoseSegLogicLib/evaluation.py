"""Plan evaluation of scene nodes through DoseSegLib's own path: the numbers of ``doseseg dvh`` on the same contours.

The segments are taken on their own labelmap grids (a closed-surface segment converted on the
segmentation's reference geometry, grown to hold it), read like a patient folder's
``structures/<Name>.nrrd`` (names mapped, prescriptions checked), aligned onto the evaluation
grid by physical coordinates, and sampled with the library's partial-volume DVH: a structure
finer than the grid keeps its own grid and the dose is interpolated at each of its voxels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from DoseSegLib import Case, Volume
from DoseSegLib.analysis.constraints import load_constraints
from DoseSegLib.analysis.dosecheck import check_dose_coverage, check_dose_units
from DoseSegLib.analysis.plan import PlanEvaluation, evaluate_plan
from DoseSegLib.core.alignment import align_case, outside_fraction
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import with_mapper_results

from . import doseunits, nodes
from .options import PatientOptions

log = logging.getLogger(__name__)


@dataclass
class SceneEvaluation:
    """A plan evaluation and the aligned case it was read from (structures on the evaluation grid)."""

    case: Case
    result: PlanEvaluation


def referenceVolumeNode(segmentationNode):
    """The volume the segmentation was made on (its reference image geometry node: the CT after SlicerRT's
    import), or None."""
    role = segmentationNode.GetReferenceImageGeometryReferenceRole()
    node = segmentationNode.GetNodeReference(role)
    return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None


def evaluationGridNode(doseNode, segmentationNode, ctNode=None):
    """The volume node whose grid the evaluation uses (``doseseg dvh``'s ct.nrrd): ``ctNode``, else the
    segmentation's reference volume when it is not a dose, else the dose itself."""
    ctNode = ctNode if ctNode is not None else referenceVolumeNode(segmentationNode)
    if ctNode is None or ctNode.GetAttribute(nodes.DOSE_ATTRIBUTE) == "1":
        return doseNode  # a segmentation drawn on a dose volume: the dose grid is the grid
    return ctNode


def sceneCase(doseNode, segmentationNode, options: PatientOptions, ctNode=None) -> Case:
    """The case ``doseseg dvh`` would read: the CT (or, without one, the dose grid), the segments on their own
    grids under their canonical names, the dose in Gy, the prescriptions and names of ``options``.

    Segments that miss the evaluation grid entirely are left out with a warning.
    """
    dose = doseunits.doseVolume(doseNode)
    check_dose_units(dose, f"'{doseNode.GetName()}'", options.allowHighDose)
    gridNode = evaluationGridNode(doseNode, segmentationNode, ctNode)
    grid = dose if gridNode is doseNode else nodes.volumeFromNode(gridNode)
    mapper = options.mapper()
    structures: dict[str, Volume] = {}
    originals: dict[str, str] = {}
    for name, mask in nodes.segmentMasks(segmentationNode).items():
        canonical = mapper.canonical(name)
        if canonical in structures:
            raise DoseSegError(f"segments '{name}' and '{originals[canonical]}' of '{segmentationNode.GetName()}' "
                               f"both map to structure '{canonical}': rename one of them")
        if outside_fraction(mask, grid) >= 1.0:
            log.warning("segment '%s' lies outside '%s' and was left out", name, gridNode.GetName())
            continue
        structures[canonical] = mask
        originals[canonical] = name
    if not structures:
        raise DoseSegError(f"no segment of '{segmentationNode.GetName()}' overlaps '{doseNode.GetName()}'")
    case = Case(doseNode.GetName(), grid, structures, dose)
    return with_mapper_results(case, mapper, originals)


def evaluateScene(doseNode, segmentationNode, options: PatientOptions, ctNode=None) -> SceneEvaluation:
    """DVHs, DVH metrics and clinical goals of the dose on the segments, as ``doseseg dvh`` computes them."""
    case = sceneCase(doseNode, segmentationNode, options, ctNode)
    aligned = align_case(case)
    if case.dose is not None:  # always: sceneCase reads it
        check_dose_coverage(case.dose, aligned.structures, f"'{doseNode.GetName()}'")
    constraints = load_constraints(options.goalsFile)
    result = evaluate_plan(aligned, options.dvhStep, (), constraints, options.dvhMethod)
    return SceneEvaluation(aligned, result)
