"""Joint training: cross-entropy on the fused logits, the baseline every balancing method is compared with."""

from .base import METHODS, Method


@METHODS.register("joint", "plain cross-entropy on the fused logits (the unbalanced baseline)")
class Joint(Method):
    """Joint training with one cross-entropy loss on the fused logits."""

    #: the step is a function of tensors alone (train.cuda_graphs may capture it)
    cuda_graph_safe = True
