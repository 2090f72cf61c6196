import time, torch, torchvision, cProfile, pstats, sys
import torch.nn.functional as F
from dsrelu_lightning import replace_activations
from dsrelu_lightning.nn.activations import dsrelu_modules
torch.manual_seed(0); import os; torch.set_flush_denormal(os.environ.get("FTZ")=="1")
net = replace_activations(torchvision.models.resnet18(num_classes=100), "dsrelu")
for l in dsrelu_modules(net): l.set_progress(0.3)
opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
x = torch.randn(32,3,32,32); y = torch.randint(0,100,(32,))
def step():
    opt.zero_grad(set_to_none=True); F.cross_entropy(net(x), y).backward(); opt.step()
times=[]
for i in range(int(__import__("os").environ.get("N","25"))):
    t=time.perf_counter()
    if i in (int(a) for a in sys.argv[1:]):
        pr=cProfile.Profile(); pr.enable(); step(); pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(15)
    else: step()
    times.append(time.perf_counter()-t)
print([round(t*1000) for t in times])
