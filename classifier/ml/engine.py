"""Inference engine: an ensemble checkpoint turned into per-backbone probabilities and votes.

Speed: images are decoded once (in threads, ahead of the network), resized once per distinct
input size, batched; on the CPU the frozen layers run compiled by OpenVINO (fused kernels;
see :mod:`classifier.ml.runtime`), or in PyTorch with batch norm folded into convolutions,
``channels_last`` and ``torch.inference_mode``; bf16 on CPUs with native bf16 only where the
checkpoint's measured vote agreement with fp32, in the same runtime, is >= 99.5% with the cells
close to a decision computed again in fp32 (:mod:`classifier.ml.precision`; checkpoints from
before that re-check: plain bf16 at >= 99.5%); else fp32;
AMP, bigger batches and pinned memory on CUDA. Models are loaded lazily, once per process (cache
keyed by the checkpoint's sha256, the device, the precision and the runtime).

A checkpoint trained with colour standardisation (:mod:`classifier.ml.colour`) has every image
standardised to its reference at decoding, as training did, before the features and the colour
statistics of the out-of-distribution check are read.

Every prediction carries its out-of-distribution score (:mod:`classifier.ml.ood`), computed from
the same features; a cell over the score's threshold is referred to an expert like a split vote,
with the reason :data:`REASON_TEXT` gives. Checkpoints from before the score have none
(``ood_score`` is None, and ``ood_checked`` False).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import alignment
from .checkpoint import load_checkpoint
from .colour import standardiser
from .device import cpu_supports_bf16, default_precision, resolve_device, set_threads
from .features import FeatureExtractor, extract_views
from .heads import build_head
from .ood import BATCH_CONFIDENCE, COLOUR_SIZE, Assessment, OODCheck, colour_features
from .optimize import optimise_for_inference
from .precision import ood_rechecked_measures, recheck_mask
from .reasons import (BATCH_UNLIKE, LOW_CONFIDENCE, NEIGHBOURS_DISAGREE, OUT_OF_DISTRIBUTION,  # noqa: F401
                      REASON_TEXT, SPLIT_VOTE, THIN_SUPPORT, reason_text)
from .preprocess import batched_resized
from .registry import build_backbone, file_sha256, get_spec, weights_sha256
from .runtime import compile_extractor, resolve_runtime
from .training import softmax_np, tta_logits
from .voting import UNIDENTIFIED, VOTINGS, Threshold, checkpoint_threshold, default_min_agreement, vote

BF16_MIN_AGREEMENT = 0.995

@dataclass
class CellPrediction:
    label: str  # voted class code, or "unidentified" when abstained
    top_class: str  # voted class even when abstaining
    confidence: float  # mean calibrated probability of the voted class
    agreement: int  # backbones whose top class is the voted class
    n_backbones: int
    abstained: bool
    per_backbone: dict[str, dict[str, float]] = field(default_factory=dict)
    probabilities: dict[str, float] = field(default_factory=dict)
    ood_score: float | None = None  # None: the checkpoint has no out-of-distribution score
    reasons: list[str] = field(default_factory=list)  # why it was referred (codes, most serious first)
    # the best guess was read on features aligned to the training cells' (a referred cell of a
    # batch that is mostly unlike the training images: classifier.ml.alignment)
    aligned: bool = False

    @property
    def out_of_distribution(self) -> bool:
        return OUT_OF_DISTRIBUTION in self.reasons

    @property
    def reason(self) -> str:
        return reason_text(self.reasons)


@dataclass
class Probabilities:
    classes: list[str]
    backbones: list[str]
    per_backbone: dict[str, np.ndarray]  # backbone -> [N, C] calibrated probabilities
    ensemble: np.ndarray  # [N, C] mean of the calibrated probabilities
    ood_scores: np.ndarray | None = None  # [N] out-of-distribution scores (None: no score)
    ood_distance: np.ndarray | None = None  # [N] the score's distance measure alone
    neighbour_labels: np.ndarray | None = None  # [N, backbones, k] classes of the nearest training cells
    support: np.ndarray | None = None  # [N, C] class support (classifier.ml.ood); None: not fitted
    features: dict[str, np.ndarray] | None = None  # backbone -> [N, D], only when asked (keep_features)
    # [N] True where the best guess was read on features aligned to the training cells'
    # (classifier.ml.alignment); None: not tried
    aligned: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: Sequence["Probabilities"]) -> "Probabilities":
        """Batches of the same model's probabilities joined, in order."""
        first = parts[0]

        def join(name):
            vals = [getattr(p, name) for p in parts]
            return None if any(v is None for v in vals) else np.concatenate(vals)

        features = None
        if all(p.features is not None for p in parts):
            features = {b: np.concatenate([p.features[b] for p in parts]) for b in first.backbones}
        return cls(classes=first.classes, backbones=first.backbones,
                   per_backbone={b: np.concatenate([p.per_backbone[b] for p in parts]) for b in first.backbones},
                   ensemble=np.concatenate([p.ensemble for p in parts]), ood_scores=join("ood_scores"),
                   ood_distance=join("ood_distance"), neighbour_labels=join("neighbour_labels"), support=join("support"),
                   features=features,
                   aligned=join("aligned"))

    @property
    def stacked(self) -> np.ndarray:
        """[n_backbones, N, C], the input of :func:`classifier.ml.voting.vote`."""
        return np.stack([self.per_backbone[b] for b in self.backbones])


class EnsembleModel:
    def __init__(self, ckpt: dict, sha256: str, *, device: str | torch.device = "auto", precision: str = "auto",
                 threads: int | None = None, runtime: str = "auto"):
        self.device = resolve_device(device)
        if self.device.type == "cpu" and threads is not None:
            set_threads(threads)
        self.runtime = resolve_runtime(runtime, self.device)
        self.sha256 = sha256
        # its backbones' last blocks were fine-tuned (mode "finetune"): its features are its own
        self.backbones_tuned = bool(ckpt.get("backbone_state"))
        self.config: dict = ckpt["config"]
        self.classes: list[str] = list(ckpt["classes"])
        self.backbones: list[str] = list(ckpt["backbones"])
        # the threshold this version applies unless the lab sets its own (never 0; a checkpoint
        # written without one gets it by the same rule: classifier.ml.voting.checkpoint_threshold)
        self.threshold: Threshold = checkpoint_threshold(ckpt)
        self.default_threshold: float = self.threshold.value
        self.min_agreement: int = int(ckpt.get("min_agreement") or default_min_agreement(len(self.backbones)))
        self.temperature: dict[str, float] = {b: float(t) for b, t in ckpt["temperature"].items()}
        self.tta_views: list[str] = list(self.config.get("tta_views", ["id"]))
        # the colour standardisation training applied before featurising (None: none; older checkpoints)
        self.standardise = standardiser(self.config.get("colour_standardisation"))
        # in a batch unlike the training images, the least confidence a call is accepted at
        # (classifier.ml.ood: BATCH_CONFIDENCE; over 1 refers every cell of such a batch)
        self.batch_confidence = float(self.config.get("batch_confidence", BATCH_CONFIDENCE))
        self.metrics: dict = ckpt.get("metrics", {})
        self.recheck: dict | None = None  # fp32 re-check near decisions (tolerances), when bf16 needs it
        self.ood: OODCheck | None = OODCheck.from_state(ckpt["ood"]) if ckpt.get("ood") else None
        # the training cells' feature statistics, for the aligned best guess of a new source's
        # cells (classifier.ml.alignment); None in checkpoints trained before it
        stats = ckpt.get("feature_stats")
        self.feature_stats: dict[str, dict] | None = (
            {b: {k: np.asarray(v, dtype=np.float32) for k, v in s.items()} for b, s in stats.items()} if stats else None)
        # their class frequencies (the class-balanced alignment); None in checkpoints trained before it
        prior = ckpt.get("class_prior")
        self.class_prior: np.ndarray | None = np.asarray(prior, dtype=np.float64) if prior is not None else None
        self.precision = self._choose_precision(precision, ckpt)
        self.extractors: dict[str, FeatureExtractor] = {}
        self.fp32_extractors: dict[str, FeatureExtractor] = {}  # the re-check's
        self.heads = {}
        self.input_sizes: dict[str, int] = {}
        for b in self.backbones:
            self._load_backbone(b, ckpt)

    # -- construction -------------------------------------------------------------------
    def _choose_precision(self, precision: str, ckpt: dict) -> str:
        if precision != "auto":
            return precision
        if self.device.type == "cuda":
            return default_precision(self.device)
        measured_in = ckpt.get("bf16_agreement_runtime", "torch")  # older checkpoints: PyTorch autocast
        if not cpu_supports_bf16() or measured_in != self.runtime:
            return "fp32"
        recheck = ckpt.get("bf16_recheck")
        if recheck is not None:
            # measured with the re-check: use it where it passes, never plain bf16 (a plain
            # agreement of 100 % on a few hundred cells does not show >= 99.5 % on the next ones,
            # and where bf16 moves little the re-check costs little)
            ood_measured = self.ood is None or recheck.get("ood_tolerance") is not None
            if ((recheck.get("agreement") or 0.0) >= BF16_MIN_AGREEMENT and ood_measured
                    and len(recheck["logit_tolerance"]) == len(self.backbones)):
                self.recheck = {"logit": dict(zip(self.backbones, recheck["logit_tolerance"])),
                                "proba": float(recheck["proba_tolerance"]),
                                "ood": recheck.get("ood_tolerance")}
                return "bf16"
            return "fp32"
        agreement = ckpt.get("bf16_agreement")  # checkpoints from before the re-check
        if agreement is not None and agreement >= BF16_MIN_AGREEMENT and self.ood is None:
            return "bf16"
        return "fp32"

    @property
    def precision_label(self) -> str:
        """How the frozen layers run: fp32, bf16, or bf16 with the fp32 re-check."""
        return "bf16 + fp32 re-check" if self.recheck else self.precision

    def _load_backbone(self, b: str, ckpt: dict) -> None:
        spec = get_spec(b)  # an unknown backbone name fails here, before anything loads
        info = ckpt["backbone_info"][b]
        size = int(info["input_size"])
        state = (ckpt.get("backbone_state") or {}).get(b)
        if info["weights"] == "imagenet":
            have = weights_sha256(b)  # raises MissingWeightsError naming file + command
            if have != info["weights_sha256"]:
                raise ValueError(f"{b}: the ImageNet weights on this machine (sha256 {have[:12]}) are not the ones "
                                 f"this checkpoint was trained with ({info['weights_sha256'][:12]})")
            bb = build_backbone(b, "imagenet" if state is None else None, input_size=size)
        else:
            bb = build_backbone(b, None, input_size=size)
        if state is not None:
            bb.load_state_dict(state)
        bb.eval()
        optimise_for_inference(bb)
        ext = FeatureExtractor(bb, info["features"]).eval()
        for p in ext.parameters():
            p.requires_grad_(False)
        ext = ext.to(self.device).to(memory_format=torch.channels_last)
        head = build_head(self.config, int(info["feature_dim"]), len(self.classes))
        head.load_state_dict(ckpt["heads"][b])
        norm = (spec.mean, spec.std)
        self.extractors[b] = compile_extractor(ext, size, runtime=self.runtime, device=self.device,
                                               precision=self.precision, normalisation=norm)
        if self.recheck:
            self.fp32_extractors[b] = compile_extractor(ext, size, runtime=self.runtime, device=self.device,
                                                        precision="fp32", normalisation=norm)
        self.heads[b] = head.eval().to(self.device)
        self.input_sizes[b] = size

    # -- inference ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict_proba(self, images: Sequence, *, batch_size: int | None = None, views: Sequence[str] | None = None,
                      backbones: Sequence[str] | None = None, threshold: float | None = None,
                      keep_features: bool = False, align: bool = True) -> Probabilities:
        """Calibrated probabilities per backbone and for the ensemble (mean), and the
        out-of-distribution score of each cell. ``images``: PIL images or paths. ``views``:
        test-time views (default: the checkpoint's). ``threshold``: the abstention threshold the
        result will be decided with (default: the checkpoint's); with the bf16 re-check, cells
        whose confidence or OOD score is near its threshold are computed in fp32.
        ``keep_features``: also return each backbone's features (for measurements, and for
        :meth:`realign` over several batches). ``align``: the images are one source's, and where
        most of them are unlike the training images, those cells' best guesses are read on aligned
        features (:meth:`realign`)."""
        views = list(views or self.tta_views)
        names = list(backbones or self.backbones)
        if batch_size is None:
            batch_size = 128 if self.device.type == "cuda" else 32
        n = len(images)
        out = {b: np.zeros((n, len(self.classes)), np.float32) for b in names}
        scored = self.ood is not None and set(self.ood.backbones) <= set(names)
        assessments = []
        asked = keep_features
        keep_features = keep_features or (align and self.can_realign(names))
        kept = {b: [] for b in names} if keep_features else None
        sizes = sorted({self.input_sizes[b] for b in names} | ({COLOUR_SIZE} if scored else set()))
        for start, batch in batched_resized(list(images) if names else [], sizes, batch_size,
                                            standardise=self.standardise):
            z, feats, assessment = self._score_batch(batch, names, views, scored=scored, threshold=threshold)
            for i, b in enumerate(names):
                out[b][start:start + z.shape[1]] = softmax_np(z[i], self.temperature[b])
            if scored:
                assessments.append(assessment)
            if kept is not None:
                for b in names:
                    kept[b].append(feats[b])
        ood = self._ood_arrays(assessments) if scored else {}
        stacked = np.stack([out[b] for b in names]) if names else np.zeros((0, n, len(self.classes)))
        features = {b: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for b, v in kept.items()} if kept else None
        proba = Probabilities(classes=self.classes, backbones=names, per_backbone=out, ensemble=stacked.mean(0),
                              features=features, **ood)
        if align and self.can_realign(names):
            proba = self.realign(proba)
        if not asked:
            proba.features = None
        return proba

    @torch.inference_mode()
    def view_features(self, images: Sequence, *, batch_size: int = 32) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """What every version with these backbones reads of ``images``: each backbone's features per
        test-time view ({backbone: [N, views, D]}) and the colour statistics [N, 40]. For measuring
        several versions of one ensemble on the same cells (with frozen backbones, preprocessing and
        views alike, they read the same features; not so a version with :attr:`backbones_tuned`):
        :meth:`proba_from_features` reads them. No bf16 re-check here."""
        names = list(self.backbones)
        feats = {b: [] for b in names}
        colour = []
        sizes = sorted({self.input_sizes[b] for b in names} | {COLOUR_SIZE})
        for _, batch in batched_resized(list(images), sizes, batch_size, standardise=self.standardise):
            for b in names:
                feats[b].append(extract_views(self.extractors[b], get_spec(b), batch[self.input_sizes[b]],
                                              self.tta_views, self.device, self.precision).float().numpy())
            colour.append(colour_features(batch[COLOUR_SIZE]))
        empty = np.zeros((0, len(self.tta_views), 0), np.float32)
        return ({b: np.concatenate(v) if v else empty for b, v in feats.items()},
                np.concatenate(colour) if colour else np.zeros((0, 40), np.float32))

    @torch.inference_mode()
    def proba_from_features(self, features: dict[str, np.ndarray], colour: np.ndarray, *,
                            align: bool = True) -> Probabilities:
        """:meth:`predict_proba` on features already extracted (:meth:`view_features`, by a version
        with the same backbones, preprocessing and views); the features are kept."""
        names = list(self.backbones)
        per = {}
        for b in names:
            z = tta_logits(self.heads[b], torch.from_numpy(np.ascontiguousarray(features[b])).to(self.device))
            per[b] = softmax_np(z.float().cpu().numpy(), self.temperature[b])
        pooled = {b: np.asarray(features[b], np.float32).mean(1) for b in names}
        ood = {}
        if self.ood is not None:
            ood = self._ood_arrays([self.ood.assess(pooled, colour)] if len(colour) else [])
        proba = Probabilities(classes=self.classes, backbones=names, per_backbone=per,
                              ensemble=np.stack([per[b] for b in names]).mean(0), features=pooled, **ood)
        if align and self.can_realign(names):
            proba = self.realign(proba)
        return proba

    def can_realign(self, names: Sequence[str] | None = None) -> bool:
        """Whether this checkpoint can give the aligned best guess (it has the training features'
        statistics and an out-of-distribution check) for these backbones."""
        names = list(names or self.backbones)
        return (self.feature_stats is not None and self.ood is not None and set(self.ood.backbones) <= set(names)
                and set(names) <= set(self.feature_stats))

    @torch.inference_mode()
    def realign(self, proba: Probabilities) -> Probabilities:
        """``proba`` of one source's cells (with their features): where the cells unlike the
        training images are most of them and at least :data:`alignment.MIN_CELLS`, their
        probabilities are read again on features aligned to the training cells'
        (:mod:`classifier.ml.alignment`); they stay flagged, so they stay referred. Returns
        ``proba`` with ``aligned`` set."""
        n = len(proba.ensemble)
        proba.aligned = np.zeros(n, dtype=bool)
        if not n or proba.features is None or proba.ood_scores is None or not self.can_realign(proba.backbones):
            return proba
        flags = self.ood.flags(proba.ood_scores)
        if not alignment.applies(flags):
            return proba
        idx = np.flatnonzero(flags)

        def read(b: str, f: np.ndarray) -> np.ndarray:
            self.heads[b].eval()
            z = self.heads[b](torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(self.device))
            return softmax_np(z.float().cpu().numpy(), self.temperature[b])

        if self.class_prior is not None and len(self.class_prior) == len(self.classes):
            per, _ = alignment.class_balanced(read, {b: proba.features[b][idx] for b in proba.backbones},
                                              self.feature_stats, self.class_prior)
            for b in proba.backbones:
                proba.per_backbone[b][idx] = per[b]
        else:  # a checkpoint from before the class frequencies: the plain alignment
            for b in proba.backbones:
                proba.per_backbone[b][idx] = read(b, alignment.align(proba.features[b][idx], self.feature_stats[b]))
        proba.ensemble = proba.stacked.mean(0)
        proba.aligned[idx] = True
        return proba

    def _score_batch(self, batch: dict, names: list[str], views: list[str], *, scored: bool,
                     threshold: float | None) -> tuple[np.ndarray, dict[str, np.ndarray], Assessment | None]:
        """One batch of resized images: the logits of each backbone [backbones, B, C], its
        features, and (``scored``) the batch's out-of-distribution assessment. With the bf16
        re-check, the results near a decision are computed again in fp32."""
        if self.device.type == "cuda":
            batch = {s: x.pin_memory() for s, x in batch.items()}
        zs, feats = [], {}
        for b in names:
            z, f = self._logits(self.extractors[b], b, batch, views, self.precision)
            zs.append(z)
            feats[b] = f
        z = np.stack(zs)
        colour = colour_features(batch[COLOUR_SIZE]) if scored else None
        assessment = self.ood.assess(feats, colour) if scored else None
        if self.recheck:
            redo = self._near_decision(z, names, assessment, threshold)
            for i, b in enumerate(names):
                idx = np.flatnonzero(redo[i])
                if len(idx):
                    part = {s: x[torch.from_numpy(idx)] for s, x in batch.items()}
                    z[i, idx], feats[b][idx] = self._logits(self.fp32_extractors[b], b, part, views, "fp32")
            if scored and redo.any():
                assessment = self.ood.assess(feats, colour)
        return z, feats, assessment

    def _near_decision(self, z: np.ndarray, names: list[str], assessment: Assessment | None,
                       threshold: float | None) -> np.ndarray:
        """[backbones, B] True where a bf16 result is too close to a decision (the vote, the
        abstention ``threshold``, the out-of-distribution thresholds) to keep: see
        :func:`classifier.ml.precision.recheck_mask`."""
        temps = np.array([self.temperature[b] for b in names])
        tol = np.array([self.recheck["logit"][b] for b in names])
        near_ood = None
        if assessment is not None:
            near_ood = ood_rechecked_measures(self.ood, assessment, len(self.recheck["ood"]))
            near_ood = near_ood + (self.recheck["ood"],)
        return recheck_mask(z, temps, tol, self.recheck["proba"],
                            self.default_threshold if threshold is None else float(threshold), ood=near_ood)

    def _ood_arrays(self, assessments: list[Assessment]) -> dict[str, np.ndarray]:
        """The batches' out-of-distribution assessments joined: the :class:`Probabilities` fields."""
        if not assessments:
            return {"ood_scores": np.zeros(0), "ood_distance": np.zeros(0),
                    "neighbour_labels": np.zeros((0, len(self.ood.backbones), self.ood.k), np.int64),
                    "support": np.zeros((0, len(self.classes))) if self.ood.features.support_m else None}
        return {
            "ood_scores": np.concatenate([a.score for a in assessments]),
            "ood_distance": np.concatenate([a.distance for a in assessments]),
            "neighbour_labels": np.concatenate([a.neighbour_labels for a in assessments]),
            "support": (None if any(a.support is None for a in assessments)
                        else np.concatenate([a.support for a in assessments])),
        }

    @torch.inference_mode()
    def _logits(self, extractor, b: str, batch: dict, views: list[str], precision: str) -> tuple[np.ndarray, np.ndarray]:
        """Logits of backbone ``b`` averaged over the views [B, C] (uncalibrated), and its
        features averaged over the views [B, D] (what the out-of-distribution score reads)."""
        feats = extract_views(extractor, get_spec(b), batch[self.input_sizes[b]], views, self.device, precision)
        logits = tta_logits(self.heads[b], feats.to(self.device)).float().cpu().numpy()
        return logits, feats.float().mean(1).cpu().numpy()

    def predict(self, images: Sequence, *, threshold: float | None = None, min_agreement: int | None = None,
                voting: str = "majority", batch_size: int = 32, views: Sequence[str] | None = None,
                ) -> list[CellPrediction]:
        """Vote per cell. ``threshold`` (confidence) and ``min_agreement`` (backbones that must
        agree) are the lab's settings (default: the checkpoint's); below either the cell is
        ``"unidentified"``. ``views``: test-time augmentation views (default: the checkpoint's)."""
        if voting not in VOTINGS:
            raise ValueError(f"voting must be one of {VOTINGS}, not {voting!r}")
        if not len(images):
            return []
        proba = self.predict_proba(images, batch_size=batch_size, views=views, threshold=threshold)
        return self.decide(proba, threshold=threshold, min_agreement=min_agreement, voting=voting)

    def decide(self, proba: Probabilities, *, threshold: float | None = None, min_agreement: int | None = None,
               voting: str = "majority", batch_check: bool = True) -> list[CellPrediction]:
        """Vote and abstain on precomputed probabilities (lab settings applied here). The cells
        are one source's batch: where, as a whole, they are unlike the training images
        (:meth:`classifier.ml.ood.OODCheck.batch_unlike`), a call is accepted only at
        :attr:`batch_confidence` or more (the lab's threshold where higher), the others are
        referred; ``batch_check`` False for cells that are not one batch."""
        t = self.default_threshold if threshold is None else float(threshold)
        k = self.min_agreement if min_agreement is None else int(min_agreement)
        stacked = proba.stacked
        res = vote(stacked, voting)
        split = res.agreement < k
        low = res.confidence < t
        none = np.zeros(stacked.shape[1], dtype=bool)
        ood = self.ood.flags(proba.ood_scores) if proba.ood_scores is not None else none
        disagree = thin = batch = none
        if proba.ood_scores is not None and batch_check:
            shift = self.ood.batch_unlike(proba.ood_scores, res.label)
            if shift is not None and shift[0] > shift[1]:
                batch = ~ood & (res.confidence < max(t, self.batch_confidence))
        if proba.ood_scores is not None:
            assessment = Assessment(proba.ood_scores, proba.ood_distance, None, proba.neighbour_labels, proba.support)
            disagree = self.ood.neighbours_disagree(assessment, res.label) & ~ood
            thin = self.ood.thinly_supported(assessment, res.label) & ~ood & ~disagree
        preds = []
        for i in range(stacked.shape[1]):
            top = self.classes[int(res.label[i])]
            reasons = [code for code, hit in ((OUT_OF_DISTRIBUTION, ood[i]), (BATCH_UNLIKE, batch[i]),
                                              (NEIGHBOURS_DISAGREE, disagree[i]),
                                              (THIN_SUPPORT, thin[i]), (SPLIT_VOTE, split[i]),
                                              (LOW_CONFIDENCE, low[i])) if hit]
            preds.append(CellPrediction(
                label=UNIDENTIFIED if reasons else top,
                top_class=top,
                confidence=float(res.confidence[i]),
                agreement=int(res.agreement[i]),
                n_backbones=len(proba.backbones),
                abstained=bool(reasons),
                per_backbone={b: dict(zip(self.classes, map(float, proba.per_backbone[b][i]))) for b in proba.backbones},
                probabilities=dict(zip(self.classes, map(float, res.mean_proba[i]))),
                ood_score=None if proba.ood_scores is None else float(proba.ood_scores[i]),
                reasons=reasons,
                aligned=bool(proba.aligned is not None and proba.aligned[i]),
            ))
        return preds

    @property
    def ood_checked(self) -> bool:
        """Whether this model scores how unlike its training images a cell is."""
        return self.ood is not None


# the models a process keeps loaded, most recently used last; at most CACHE_SIZE (the active version
# and one more, e.g. a candidate being evaluated): each holds its compiled networks, about 1-2 GB
# for the offline ensemble, so a worker that lives through many retrainings must let old ones go
CACHE_SIZE = 2
_CACHE: OrderedDict[tuple[str, str, str, str], EnsembleModel] = OrderedDict()
_LOCK = threading.Lock()


def load_ensemble(checkpoint_path: Path | str, *, device: str = "auto", precision: str = "auto",
                  runtime: str = "auto") -> EnsembleModel:
    """Load (once per process, cached by the checkpoint's sha256, device, precision and
    runtime) an ensemble."""
    dev = resolve_device(device)
    rt = resolve_runtime(runtime, dev)
    digest = file_sha256(Path(checkpoint_path))  # memoised by (path, size, mtime)
    key = (digest, str(dev), precision, rt)
    with _LOCK:
        model = _CACHE.get(key)
        if model is None:
            ckpt, digest = load_checkpoint(checkpoint_path)
            model = EnsembleModel(ckpt, digest, device=dev, precision=precision, runtime=rt)
            key = (digest, str(dev), precision, rt)
            _CACHE[key] = model
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return model


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
