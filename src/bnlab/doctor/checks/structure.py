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
            if prev.kind not in ("linear", "conv"):
                continue
            l2, decay = prev.attrs.get("l2"), exam.weight_decay.get(prev.path)
            if not l2 and not decay:
                continue
            if l2:
                what = f"an L2 kernel penalty ({l2:g})"
                remove = f"Remove kernel_regularizer from {prev.path} (or lower it by 10-100x)"
            else:
                what = f"optimizer weight decay ({decay:g})"
                remove = (
                    f"Exclude {prev.path}'s weights from weight decay (a parameter group with "
                    "weight_decay=0 in PyTorch; optimizer.exclude_from_weight_decay in Keras)"
                )
            tail = (
                f"; the penalty is {share:.0%} of the training loss"
                if share is not None and l2
                else ""
            )
            findings.append(
                Finding(
                    id="l2-with-bn",
                    severity="info"
                    if share is not None and l2 and share < L2_SHARE_INFO
                    else "warning",
                    layer=prev.path,
                    message=(
                        f"{prev.label} has {what} but feeds {bn.label}, which undoes any scaling "
                        "of its weights, so the penalty only shrinks them and raises the "
                        f"effective learning rate{tail}."
                    ),
                    evidence={
                        "l2": l2,
                        "weight_decay": decay,
                        "bn": bn.path,
                        "regularization_loss": reg,
                        "data_loss": data_loss,
                        "regularization_share": share,
                        **_graph_note(exam),
                    },
                    fix=(
                        f"{remove}. An L2 term in the loss and optimizer weight decay act the "
                        "same on weights a BN layer follows (decoupled decay as in AdamW "
                        "included): either one only sets their scale, i.e. the effective learning "
                        "rate. Keep it on the BN-free output layer, or lower it and re-tune the "
                        "learning rate."
                    ),
                )
            )
    return findings


# Structural checks that read the data flow; on an untraced graph they read a chain.
FLOW_CHECKS = ("bn-before-output", "dropout-before-bn", "bias-before-bn", "l2-with-bn")


def check_shared_bn(exam: Exam) -> list[Finding]:
    seen: dict[str, int] = {}
    for node in exam.graph.nodes.values():
        if node.kind == "bn" and node.attrs.get("call_sites", 1) > 1:
            seen[node.path] = int(node.attrs["call_sites"])
    findings = []
    for path, calls in seen.items():
        findings.append(
            Finding(
                id="shared-bn",
                severity="warning",
                layer=path,
                message=(
                    f"{path} is called at {calls} places in the graph (a shared layer, as in a "
                    "Siamese or recurrent model): its moving statistics average the inputs of "
                    "every call site, so at inference each site is normalised with statistics "
                    "that are not its own."
                ),
                evidence={"call_sites": calls, **_graph_note(exam)},
                fix=(
                    "Give each call site its own BN layer (share the convolution/dense weights, "
                    "not the normalisation), or use a batch-independent norm there "
                    "(LayerNorm/GroupNorm)."
                ),
            )
        )
    return findings


def check_graph_not_traced(exam: Exam) -> list[Finding]:
    if exam.graph.source not in ("registration order", "layer order") or not exam.bn:
        return []
    return [
        Finding(
            id="graph-not-traced",
            severity="info",
            layer=None,
            message=(
                f"The model's data flow could not be traced, so the structural checks "
                f"({', '.join(FLOW_CHECKS)}) read the layers in {exam.graph.source} as a chain "
                "(right for Sequential-like models, a guess otherwise), and shared-bn could not "
                "run."
            ),
            evidence={
                "graph": exam.graph.source,
                "approximate": list(FLOW_CHECKS),
                "not_run": ["shared-bn"],
            },  # fmt: skip
            fix=(
                "Make forward traceable (torch.fx: no data-dependent Python control flow; Keras: "
                "a functional or Sequential model) to get exact structural checks."
            ),
        )
    ]
