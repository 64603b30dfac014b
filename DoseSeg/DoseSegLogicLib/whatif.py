"""The What-if mode's scene side: a persistent worker process holds the patient and the dose model;
segment edits (debounced) go to it, and its predictions come back as the dose volume node, the DVH
curves (the previous ones kept dashed) and the metric and goal tables, without blocking the GUI.

The worker is ``python -m DoseSegLib.run.whatif_worker`` (protocol in that module), started with the
library's Python; it exits on ``close`` and when Slicer dies (its stdin closes). The GUI calls
:meth:`WhatIfLogic.poll` from a timer; a test or the console may call it in a loop.
:meth:`WhatIfLogic.requestSensitivity` asks for a sensitivity map, shown by :mod:`.sensitivity` when it arrives.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import slicer
import vtk

from DoseSegLib.core.case import Case
from DoseSegLib.core.errors import DoseSegError
from DoseSegLib.io.patient import read_dose, read_volume, write_patient

from . import nodes, results, runfolder, sensitivity
from .pipeline import CONSTRAINTS_TABLE_NAME, METRICS_TABLE_NAME, fileName
from .process import cliEnvironment, pythonExecutable

DOSE_NODE_SUFFIX = " what-if dose"


class WhatIfWorker:
    """The worker process; requests are written at once, replies gathered by a thread (never blocks)."""

    def __init__(self, python: str | None = None) -> None:
        self.process = subprocess.Popen(
            [python or pythonExecutable(), "-m", "DoseSegLib.run.whatif_worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cliEnvironment())
        self.replies: queue.Queue = queue.Queue()
        self.lastId = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(json.loads(line))

    def send(self, op: str, **fields) -> int:
        """Send one request; returns its id."""
        self.lastId += 1
        self.process.stdin.write(json.dumps({"id": self.lastId, "op": op, **fields}) + "\n")
        self.process.stdin.flush()
        return self.lastId

    def reply(self, timeout: float = 0.0) -> dict | None:
        """The next reply, or None when none arrived within ``timeout`` seconds."""
        try:
            return self.replies.get(timeout=timeout) if timeout else self.replies.get_nowait()
        except queue.Empty:
            return None

    def close(self, timeout: float = 1.0) -> None:
        """Ask the worker to stop; kill it if it does not within ``timeout`` seconds (it holds nothing that
        needs saving: a Stop during a prediction must not freeze the GUI)."""
        with contextlib.suppress(OSError, ValueError):
            self.send("shutdown")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WhatIfLogic:
    """What-if on ``segmentationNode`` over ``ctNode``: edits lead to an updated dose node, DVH and tables.

    Args:
        debounceSeconds: wait this long after the last segment change before predicting.
        device: ``auto``, ``cpu`` or ``cuda`` for the worker's model.
        python: the library's Python (default: PythonSlicer in Slicer, this interpreter elsewhere).
    """

    def __init__(self, ctNode, segmentationNode, debounceSeconds: float = 0.5, device: str = "auto",
                 python: str | None = None) -> None:
        self.scene = ctNode.GetScene()
        self.ctNode, self.segmentationNode = ctNode, segmentationNode
        self.debounceSeconds = debounceSeconds
        self.ct = nodes.volumeFromNode(ctNode)
        self.folder = Path(tempfile.mkdtemp(prefix="doseseg-whatif-"))
        try:
            masks = nodes.segmentMasks(segmentationNode, self.ct)
            (self.folder / "patient").mkdir()
            write_patient(self.folder / "patient", Case("patient", self.ct, {fileName(n): m for n, m in masks.items()}))
        except Exception:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.sent = {name: self._digest(mask.array) for name, mask in masks.items()}
        self.worker = WhatIfWorker(python)
        self.opening = self.worker.send("open", patient=str(self.folder / "patient"), device=device)
        self.structures: list[str] = []  # the session's structure names, once the worker has opened the patient
        self.sentAt = time.monotonic()
        self.waiting: int | None = self.worker.send("predict", dose_file="dose.nrrd", dvh=True)
        self.due: float | None = None
        self.doseNode = None
        self.reading: tuple[dict, threading.Thread, dict] | None = None  # a reply whose dose is being read
        self.chartNode = None  # made by the first prediction
        self.previousDvhs: dict | None = None
        self.lastError: str | None = None
        self.latency: float | None = None  # seconds from sending the edits to the updated scene
        self.predictSeconds: float | None = None  # the worker's prediction time
        self.updates = 0
        self.sensitivityRequest: dict | None = None  # the pending request's fields and id
        self.sensitivityNode = None
        self.sensitivityFile: Path | None = None  # the last map the worker wrote
        self.sensitivityError: str | None = None
        self.edited: set[str] | None = set()  # IDs of the segments edited since the last send; None: all of them
        self.observed = segmentationNode.GetSegmentation()
        self.observerTags = [self.observed.AddObserver(event, self.onSegmentationModified) for event in (
            slicer.vtkSegmentation.SegmentModified, slicer.vtkSegmentation.RepresentationModified,
            slicer.vtkSegmentation.SegmentAdded)]

    @staticmethod
    def _digest(array: np.ndarray) -> int:
        return zlib.crc32(np.packbits(array).tobytes())

    @vtk.calldata_type(vtk.VTK_STRING)
    def onSegmentationModified(self, caller=None, event=None, segmentId: str | None = None) -> None:
        """A segment changed: predict again once the edits pause for ``debounceSeconds``; only the segments
        named by the events are extracted again (all of them after an event that names none)."""
        if self.edited is not None:
            if segmentId:
                self.edited.add(segmentId)
            else:
                self.edited = None
        self.due = time.monotonic() + self.debounceSeconds

    @property
    def metricsTable(self):
        """The DVH metrics table node (None before the first prediction)."""
        return self.scene.GetFirstNode(METRICS_TABLE_NAME, "vtkMRMLTableNode")

    @property
    def constraintsTable(self):
        """The clinical goals table node (None before the first prediction)."""
        return self.scene.GetFirstNode(CONSTRAINTS_TABLE_NAME, "vtkMRMLTableNode")

    @property
    def busy(self) -> bool:
        """An edit waits for its debounce, a prediction is under way or its dose is being read."""
        return self.due is not None or self.waiting is not None or self.reading is not None

    def poll(self) -> bool:
        """Send debounced edits and apply the replies that arrived; True when the scene was updated.

        Raises:
            DoseSegError: the worker process has ended (all its replies applied first).
        """
        exited = self.worker.process.poll()
        if self.due is not None and time.monotonic() >= self.due and self.waiting is None and self.reading is None \
                and exited is None:
            self.due = None
            self._sendEdits()
        updated = False
        while (reply := self.worker.reply()) is not None:
            updated |= self._apply(reply)
        if self.reading is not None and not self.reading[1].is_alive():
            result, _, read = self.reading
            self.reading = None
            if "dose" in read:
                self._show(result, read["dose"])
                updated = True
            else:
                self.lastError = f"cannot read the predicted dose ({read.get('error')})"
        if exited is not None:
            raise DoseSegError(f"what-if: the worker process ended (exit code {exited}); press Start again")
        return updated

    def takeError(self) -> str | None:
        """The last worker error not yet taken (each is returned once)."""
        error, self.lastError = self.lastError, None
        return error

    def requestSensitivity(self, structure: str, metric: str = "Mean[Gy]", wrt: str | None = None) -> None:
        """Ask for the sensitivity map of ``structure``'s ``metric`` to ``wrt``'s mask (default: its own);
        :meth:`poll` shows it (``sensitivityNode``) when it arrives. One request at a time."""
        if self.sensitivityRequest is not None:
            raise DoseSegError("what-if: a sensitivity map is already being computed")
        fields = {"structure": structure, "metric": metric, "wrt": wrt or None,
                  "out_file": "sensitivity.nrrd"}
        self.sensitivityRequest = {**fields, "id": self.worker.send("sensitivity", **fields)}

    def _sendEdits(self) -> None:
        """The masks of the edited segments that changed, then a prediction (none when no mask changed, e.g. a
        colour edit). Segments no event named are not extracted again."""
        self.sentAt = time.monotonic()
        changed = False
        present = nodes.segmentIds(self.segmentationNode)
        edited = present if self.edited is None else [segmentId for segmentId in present if segmentId in self.edited]
        self.edited = set()
        for name, mask in nodes.segmentMasks(self.segmentationNode, self.ct, edited).items():
            digest = self._digest(mask.array)
            if self.sent.get(name) != digest:
                path = self.folder / f"edit_{len(self.sent)}_{fileName(name)}.npy"
                np.save(path, mask.array, allow_pickle=False)
                self.worker.send("set_mask", name=name, mask_file=str(path))
                self.sent[name] = digest
                changed = True
        if changed:
            self.waiting = self.worker.send("predict", dose_file="dose.nrrd", dvh=True)

    def _apply(self, reply: dict) -> bool:
        if not reply["ok"]:
            self.lastError = reply["error"]
        if reply["id"] == self.opening and reply["ok"]:
            self.structures = list(reply["result"]["structures"])
        if self.sensitivityRequest is not None and reply["id"] == self.sensitivityRequest["id"]:
            request, self.sensitivityRequest = self.sensitivityRequest, None
            self.sensitivityError = None if reply["ok"] else reply["error"]
            if reply["ok"]:
                self._showSensitivity(request, reply["result"]["out_file"])
            return reply["ok"]
        if reply["id"] != self.waiting:
            return False
        self.waiting = None
        if not reply["ok"]:
            return False
        read: dict = {}  # the clinical-size dose file is read off the main thread; poll() shows it
        path = reply["result"]["dose_file"]

        def readDose() -> None:
            try:
                read["dose"] = read_dose(path)  # written in the worker's own folder
            except Exception as exc:
                read["error"] = exc

        thread = threading.Thread(target=readDose, daemon=True)
        thread.start()
        self.reading = (reply["result"], thread, read)
        return False

    def _show(self, result: dict, dose) -> None:
        if self.doseNode is None:
            self.doseNode = nodes.addVolumeNode(self.scene, dose, self.ctNode.GetName() + DOSE_NODE_SUFFIX,
                                                autoWindowLevel=False)
            nodes.showDose(self.doseNode, self.ctNode)
        else:
            nodes.updateVolumeNode(self.doseNode, dose)
        from DoseSegLib.analysis.dvh import DVH

        dvhs = {n: DVH(*(np.asarray(c[k]) for k in ("dose_gy", "volume_cc", "volume_pct")))
                for n, c in result["dvhs"].items()}
        colors = {n: (0.5, 0.5, 0.5) for n in dvhs} | runfolder.curveColors(self.segmentationNode)
        chart = self.chartNode = results.dvhChart(self.scene)
        if self.previousDvhs is not None:
            results.addDvhNodes(chart, self.previousDvhs, colors, "previous ", dashed=True)
        results.addDvhNodes(chart, dvhs, colors)
        self.previousDvhs = dvhs
        results.setTableRows(results.getOrAddNode(self.scene, "vtkMRMLTableNode", METRICS_TABLE_NAME),
                             result["metrics"])
        results.setTableRows(results.getOrAddNode(self.scene, "vtkMRMLTableNode", CONSTRAINTS_TABLE_NAME),
                             result["goals"])
        self.latency, self.predictSeconds = time.monotonic() - self.sentAt, float(result["seconds"])
        self.updates += 1

    def _showSensitivity(self, request: dict, path: str) -> None:
        self.sensitivityFile = Path(path)  # in the worker's own folder (Gy per voxel)
        perVoxel = read_volume(path)
        reuse = self.sensitivityNode if self.sensitivityNode is not None and self.sensitivityNode.GetScene() else None
        self.sensitivityNode = sensitivity.showSensitivity(
            self.scene, perVoxel, request["structure"], request["metric"], request["wrt"], self.ctNode, reuse)

    def waitForUpdate(self, timeout: float = 300.0) -> None:
        """Poll until the pending prediction is shown (console and tests); DoseSegError on a worker error."""
        start, count = time.monotonic(), self.updates
        while self.updates == count and time.monotonic() - start < timeout:
            self.poll()
            if self.waiting is None and self.due is None and self.reading is None and self.updates == count:
                break
            time.sleep(0.05)
        if self.updates == count:
            raise DoseSegError(f"what-if: no update ({self.lastError or 'timed out'})")

    def waitForSensitivity(self, timeout: float = 300.0):
        """Poll until the pending sensitivity map is shown (console and tests); its node.
        DoseSegError on a worker error."""
        deadline = time.monotonic() + timeout
        while self.sensitivityRequest is not None and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        if self.sensitivityRequest is not None or self.sensitivityError:
            raise DoseSegError(f"what-if: no sensitivity map ({self.sensitivityError or 'timed out'})")
        return self.sensitivityNode

    def close(self) -> None:
        """Stop observing, stop the worker and delete its temporary folder."""
        for tag in self.observerTags:
            self.observed.RemoveObserver(tag)
        self.worker.close()
        shutil.rmtree(self.folder, ignore_errors=True)
