import torch, torch.nn as nn, torch.nn.functional as F
from erlmr import ConcatFusion, EulerRepresentation, MMCLoss, min_norm_weights
encoders = nn.ModuleList([nn.Conv1d(3, 16, 5), nn.Conv1d(3, 16, 5)])       # your encoders: (B, 3, 64) -> (B, 16, 60)
euler = EulerRepresentation([(16, 60), (16, 60)], out_features=32)         # shared projection, λ per channel
head = ConcatFusion([64, 64], num_classes=4)                               # features are [real ‖ imag] = 2·32
mmc, params = MMCLoss(), [*encoders.parameters(), *euler.parameters(), *head.parameters()]
optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
shared = [*encoders.parameters(), *euler.parameters()]
for x_a, x_b, y in [(torch.randn(8, 3, 64), torch.randn(8, 3, 64), torch.randint(0, 4, (8,)))] * 5:
    out = euler([enc(x) for enc, x in zip(encoders, (x_a, x_b))])
    fused = head(out.features)
    losses = [F.cross_entropy(fused.logits, y), mmc(out.phases, fused.modality_logits, y)]
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(l, shared, retain_graph=True)]) for l in losses]
    w = min_norm_weights(grads, torch.stack(losses).detach(), normalization="loss+")
    optimizer.zero_grad(); (w[0] * losses[0] + w[1] * losses[1]).backward(); optimizer.step()
