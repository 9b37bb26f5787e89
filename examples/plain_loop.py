import torch
import torch.nn as nn
import torch.nn.functional as F

from erlmr import ConcatFusion, EulerRepresentation, MMCLoss, balanced_backward

encoders = nn.ModuleList([nn.Conv1d(3, 16, 5), nn.Conv1d(3, 16, 5)])  # your encoders: (B, 3, 64) -> (B, 16, 60)
euler = EulerRepresentation([(16, 60), (16, 60)], out_features=32)  # shared projection, λ per channel
head, mmc = ConcatFusion([64, 64], num_classes=4), MMCLoss()  # features are [real ‖ imag] = 2·32
params = [*encoders.parameters(), *euler.parameters(), *head.parameters()]
optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
x_a, x_b, y = torch.randn(8, 3, 64), torch.randn(8, 3, 64), torch.randint(0, 4, (8,))
for step in range(20):
    out = euler([enc(x) for enc, x in zip(encoders, (x_a, x_b))])
    fused = head(out.features)
    losses = [F.cross_entropy(fused.logits, y), mmc(out.phases, fused.modality_logits, y)]
    optimizer.zero_grad()
    weights = balanced_backward(losses, params, shared=[*encoders.parameters(), *euler.parameters()])
    optimizer.step()
    print(f"step {step}: fusion CE {losses[0].item():.4f}  MMC {losses[1].item():.4f}  weights {weights.tolist()}")
