import torch

# Tiny models on a shared CPU: one thread avoids oversubscription (tests run several times faster).
torch.set_num_threads(1)
