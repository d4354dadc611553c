"""Checks on where BN sits in the layer graph.

Each check walks the graph from a BN node through layers that do not change what matters
for that check ("transparent" layers), e.g. a bias survives max-pooling unchanged, and a
ReLU keeps a layer positively homogeneous, so ``BN(relu(c * W x)) == BN(relu(W x))``.
"""

from __future__ import annotations

from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding
from bnlab.doctor.model_view import Node
from bnlab.doctor.thresholds import L2_SHARE_INFO  # noqa: F401 - re-exported

_SHAPE_ONLY = {"identity", "flatten"}
_HOMOGENEOUS = {"relu", "leakyrelu", "relu6", "prelu"}
_OUTPUT_ACTIVATIONS = {"softmax", "sigmoid", "logsoftmax"}


def _bn_nodes(exam: Exam) -> list[Node]:
    return [n for n in exam.graph.nodes.values() if n.kind == "bn"]


def _graph_note(exam: Exam) -> dict:
    return {"graph": exam.graph.source}


def check_bias_before_bn(exam: Exam) -> list[Finding]:
    findings = []
    for bn in _bn_nodes(exam):
        for prev in exam.graph.producers(bn, lambda n: n.kind in _SHAPE_ONLY | {"pool"}):
            if prev.kind in ("linear", "conv") and prev.attrs.get("bias"):
                findings.append(
                    Finding(
                        id="bias-before-bn",
                        severity="info",
                        layer=prev.path,
                        message=(
                            f"The bias of {prev.label} is subtracted away by the mean of "
                            f"{bn.label} right after it, so those parameters are wasted."
                        ),
                        evidence={
                            "bn": bn.path,
                            "bias_parameters": prev.attrs.get("bias_params"),
                            **_graph_note(exam),
                        },  # fmt: skip
                        fix=(
                            f"Create {prev.path} without a bias (use_bias=False in Keras/bnlab, "
                            "bias=False in PyTorch); BN's beta plays its role."
                        ),
                    )
                )
    return findings


def check_dropout_before_bn(exam: Exam) -> list[Finding]:
    through = _SHAPE_ONLY | {"pool", "activation", "pad"}
    findings = []
    for bn in _bn_nodes(exam):
        for prev in exam.graph.producers(bn, lambda n: n.kind in through):
            if prev.kind == "dropout":
                findings.append(
                    Finding(
                        id="dropout-before-bn",
                        severity="warning",
                        layer=bn.path,
                        message=(
                            f"{prev.label} feeds {bn.label}: dropout changes the variance BN sees "
                            "between training and inference (variance shift), so the moving "
                            "variance does not match what the layer gets at inference."
                        ),
                        evidence={
                            "dropout": prev.path,
                            "rate": prev.attrs.get("p"),
                            **_graph_note(exam),
                        },  # fmt: skip
                        fix=(
                            f"Move {prev.path} after the last BN layer (e.g. just before the "
                            "output layer), or drop it: BN already regularises."
                        ),
                    )
                )
    return findings


def check_bn_before_output(exam: Exam) -> list[Finding]:
    def through(n: Node) -> bool:
        if n.kind == "activation":
            return n.attrs.get("fn") in _OUTPUT_ACTIVATIONS
        return n.kind in _SHAPE_ONLY | {"dropout"}

    findings = []
    for bn in _bn_nodes(exam):
        if exam.graph.reaches_output(bn, through):
            findings.append(
                Finding(
                    id="bn-before-output",
                    severity="warning",
                    layer=bn.path,
                    message=(
                        f"{bn.label} normalises the final logits, so their scale is set by "
                        "batch statistics and one gamma per class instead of by the last layer."
                    ),
                    evidence=_graph_note(exam),
                    fix=(
                        f"Remove {bn.path}, or move it before the last Dense/Linear layer; let "
                        "the output layer produce the logits."
                    ),
                )
            )
    return findings


def check_l2_with_bn(exam: Exam) -> list[Finding]:
    def through(n: Node) -> bool:
        if n.kind == "activation":
            return n.attrs.get("fn") in _HOMOGENEOUS
        return n.kind in _SHAPE_ONLY | {"pool", "pad", "dropout"}

    reg = exam.regularization_loss
    data_loss = exam.train_mode.loss if exam.train_mode is not None else None
    share = None
    if reg is not None and data_loss is not None and reg + data_loss > 0:
        share = reg / (reg + data_loss)
    findings = []
    for bn in _bn_nodes(exam):
        for prev in exam.graph.producers(bn, through):
            if prev.kind not in ("linear", "conv") or not prev.attrs.get("l2"):
                continue
            tail = f"; the penalty is {share:.0%} of the training loss" if share is not None else ""
            findings.append(
                Finding(
                    id="l2-with-bn",
                    severity="info" if share is not None and share < L2_SHARE_INFO else "warning",
                    layer=prev.path,
                    message=(
                        f"{prev.label} has an L2 kernel penalty ({prev.attrs['l2']:g}) but feeds "
                        f"{bn.label}, which undoes any scaling of its weights, so the penalty only "
                        f"shrinks them and raises the effective learning rate{tail}."
                    ),
                    evidence={
                        "l2": prev.attrs["l2"],
                        "bn": bn.path,
                        "regularization_loss": reg,
                        "data_loss": data_loss,
                        "regularization_share": share,
                        **_graph_note(exam),
                    },
                    fix=(
                        f"Remove kernel_regularizer from {prev.path} (or lower it by 10-100x); "
                        "regularise the BN-free output layer or use optimizer weight decay "
                        "with a tuned learning rate instead."
                    ),
                )
            )
    return findings
