"""The Slicer module's main-thread costs on a clinical-size scene (PyPI slicer-core, no GUI): how long each button
blocks Slicer's main thread (goal <= 1 s), Compute DVH, and the scene side of a what-if edit (goal <= 0.3 s
on top of the library's prediction).

Usage: .venv/bin/python benchmarks/bench_slicer_scene.py [--shape 512 512 200] [--segments 21] [--runs 3]

The scene is built as SlicerRT's DICOM-RT import leaves a plan: a 512 x 512 x 200 CT, an RTSTRUCT of 21
segments each on its own extent (BODY reaching past the CT), an RTDOSE on a coarser 2.5 mm grid smaller
than the CT in a CGY study. A step's main-thread block is what runs before its background process starts
(nodes to Volumes, segments onto their grids) plus loading its results (a clinical-size run folder);
the command line itself runs in another process and is not counted. The load average is printed: the
figures vary with the other jobs on a shared machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "DoseSeg"))

import slicer  # noqa: E402
from DoseSegLogicLib import doseunits, nodes, pipeline, results, runfolder  # noqa: E402

from DoseSegLib import Volume  # noqa: E402
from DoseSegLib.io.patient import read_dose, write_segmentation, write_volume  # noqa: E402

ORGAN_RADII_MM = (8, 10, 12, 14, 16, 18, 20, 22, 25, 28, 30, 32, 35, 38, 40, 12, 15, 9, 11, 45)


def _register_converters() -> None:
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def _ellipsoid(grid: Volume, centre: np.ndarray, radius: float) -> Volume:
    """A ball of ``radius`` mm at ``centre`` (LPS) on ``grid``, cropped to its box (its own extent)."""
    spacing = np.asarray(grid.spacing)
    low = np.maximum(np.floor((centre - radius - np.asarray(grid.origin)) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centre + radius - np.asarray(grid.origin)) / spacing).astype(int) + 1, grid.shape)
    axes = [grid.origin[a] + spacing[a] * np.arange(low[a], high[a]) - centre[a] for a in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    inside = (x / radius) ** 2 + (y / (0.8 * radius)) ** 2 + (z / (1.2 * radius)) ** 2 <= 1.0
    origin = np.asarray(grid.origin) + spacing * low
    return Volume(inside, grid.spacing, tuple(origin))


def build_scene(scene, shape: tuple[int, int, int], segments: int):
    """CT, RTSTRUCT segmentation and RTDOSE (cGy study) as SlicerRT's import leaves them."""
    spacing = (0.98, 0.98, 2.5)
    origin = tuple(-s * (n - 1) / 2 for s, n in zip(spacing, shape, strict=True))
    x = origin[0] + spacing[0] * np.arange(shape[0])
    y = origin[1] + spacing[1] * np.arange(shape[1])
    body2d = (x[:, None] / 180.0) ** 2 + (y[None, :] / 120.0) ** 2 <= 1.0
    ct_array = np.full(shape, -1000, dtype=np.int16, order="F")
    ct_array[body2d] = 40
    ct = Volume(ct_array, spacing, origin)
    ctNode = nodes.addVolumeNode(scene, ct, "CT")
    segmentation = nodes.newSegmentationNode(scene, "RTSTRUCT", ctNode)
    body = np.repeat(body2d[:, :, None], shape[2] + 4, axis=2)  # BODY: 2 slices past the CT at each end
    masks = {"BODY": Volume(body, spacing, (origin[0], origin[1], origin[2] - 2 * spacing[2]))}
    rng = np.random.default_rng(0)
    for index in range(segments - 1):
        radius = float(ORGAN_RADII_MM[index % len(ORGAN_RADII_MM)])
        centre = np.array([rng.uniform(-100, 100), rng.uniform(-60, 60), rng.uniform(-150, 150)])
        if index == segments - 2:  # the target, at the dose's centre
            masks["PTV1"] = _ellipsoid(ct, np.zeros(3), radius)
        else:
            masks[f"Organ{index:02d}"] = _ellipsoid(ct, centre, radius)
    nodes.addSegments(segmentation, masks)
    dose_spacing = (2.5, 2.5, 2.5)
    dose_shape = (150, 100, int(shape[2] * spacing[2] / 2.5) - 10)
    dose_origin = (-186.25, -123.75, origin[2] + 12.5)
    axes = [dose_origin[a] + dose_spacing[a] * np.arange(dose_shape[a]) for a in range(3)]
    dx, dy, dz = np.meshgrid(*axes, indexing="ij")
    dose = (6000.0 * np.exp(-(dx**2 + dy**2) / (2 * 60.0**2) - dz**2 / (2 * 120.0**2))).astype(np.float32)
    doseNode = nodes.addVolumeNode(scene, Volume(dose, dose_spacing, dose_origin), "RTDOSE")
    doseNode.SetAttribute(nodes.DOSE_ATTRIBUTE, "1")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = shNode.CreateStudyItem(shNode.CreateSubjectItem(shNode.GetSceneItemID(), "Patient"), "Study")
    shNode.SetItemAttribute(study, "DicomRtImport.DoseUnitName", "CGY")
    for node in (ctNode, segmentation, doseNode):
        shNode.CreateItem(study, node)
    return ctNode, segmentation, doseNode


class _NotStarted:
    """Stands for DoseSegJob: records the step's inputs writer instead of starting a process."""

    def __init__(self, title, writeInputs, finish, output=None, read=None) -> None:
        self.writeInputs = writeInputs

    def start(self):
        return self


def seconds(work, runs: int) -> tuple[float, object]:
    """Median wall time of ``runs`` calls, and the last result."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200))
    parser.add_argument("--segments", type=int, default=21)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the clipped-structure warnings are expected here
    _register_converters()
    scene = slicer.vtkMRMLScene()
    build = time.perf_counter()
    ctNode, segmentation, doseNode = build_scene(scene, tuple(args.shape), args.segments)
    print(f"scene: CT {tuple(args.shape)}, {args.segments} segments, RTDOSE "
          f"{doseNode.GetImageData().GetDimensions()} (built in {time.perf_counter() - build:.1f} s); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    logic = pipeline.DoseSegPipeline(scene)
    started = time.perf_counter()
    job = logic.startComputeDvh(doseNode, segmentation, {"PTV1": 60.0})
    prep = time.perf_counter() - started
    shown = []
    show = logic.showEvaluation

    def timedShow(*args, **kwargs):
        start = time.perf_counter()
        result = show(*args, **kwargs)
        shown.append(time.perf_counter() - start)
        return result

    logic.showEvaluation = timedShow
    out = job.wait()
    total = time.perf_counter() - started
    print(f"Compute DVH (doseseg dvh in a background process, partial volume, {len(out['dvhTables'])} structures): "
          f"{total:.1f} s in all; main thread {prep:.2f} s before the process starts + {shown[0]:.2f} s loading "
          f"the tables")
    pipeline.DoseSegJob = _NotStarted  # the command line is not under test below: the main thread's share is
    block, job = seconds(lambda: logic.startRunAll(ctNode, segmentation, doseNode), args.runs)
    print(f"Run all / Predict / Auto-segment / Radiomics / Align, main thread before the process starts: "
          f"{block:.2f} s")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write, _ = seconds(lambda: job.writeInputs(Path(tempfile.mkdtemp(dir=folder))), 1)
        print(f"  inputs written in the job's worker thread (not the main thread): {write:.2f} s")
        run = folder / "run"
        run.mkdir()
        ct = nodes.volumeFromNode(ctNode)
        predicted = doseunits.doseVolume(doseNode)
        from DoseSegLib.core.alignment import resample

        write_volume(run / "dose.nrrd", resample(predicted, ct))
        write_segmentation(run / "segmentation.seg.nrrd", {"BODY": nodes.segmentMasks(segmentation)["BODY"]})
        from DoseSegLogicLib import evaluation
        from DoseSegLogicLib.options import PatientOptions

        evaluated = evaluation.evaluateScene(doseNode, segmentation, PatientOptions({"PTV1": 60.0})).result
        evaluated.write(run)
        (run / "summary.json").write_text("{}")
        read, volumes = seconds(lambda: runfolder.readRunVolumes(run), 1)
        load, _ = seconds(lambda: logic.loadRunFolder(run, ctNode, segmentation, 60.0, volumes=volumes), args.runs)
        print(f"Run all, its clinical-size results: read in the job's worker thread {read:.2f} s, "
              f"then nodes and tables on the main thread {load:.2f} s")
        edited = nodes.segmentIds(segmentation)[5]
        one, _ = seconds(lambda: nodes.segmentMasks(segmentation, ct, [edited]), args.runs)
        every, _ = seconds(lambda: nodes.segmentMasks(segmentation, ct), 1)
        write_volume(run / "whatif_dose.nrrd", resample(predicted, ct))
        dvhs = evaluated.dvhs
        whatIfDose = nodes.addVolumeNode(scene, ct, "what-if dose", autoWindowLevel=False)
        readEdit, editDose = seconds(lambda: read_dose(run / "whatif_dose.nrrd"), 1)

        def showEdit() -> None:  # what WhatIfLogic._show does on the main thread with the worker's reply
            nodes.updateVolumeNode(whatIfDose, editDose)
            results.addDvhNodes(results.dvhChart(scene), dvhs, {name: (0.5, 0.5, 0.5) for name in dvhs})

        show, _ = seconds(showEdit, args.runs)
        print(f"What-if edit, scene side on the main thread: the edited segment onto the CT {one:.2f} s (every "
              f"segment: {every:.2f} s), the new dose and DVHs shown {show:.2f} s; the dose file read in a worker "
              f"thread {readEdit:.2f} s")


if __name__ == "__main__":
    main()
