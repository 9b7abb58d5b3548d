"""Where an ARGUS training step goes: the torch profiler over two steps of the ~3.2M preset at
history 512 (batch 16, corrected logQ, feedback head, 2 threads) on the long-history simulator.

    python benchmarks/profile_step.py   # expects the data of finetune_speedup.py / throughput.py
"""
import torch, time
from argusrec.optim import build_optimizer
from argusrec.train import TrainConfig, build_model
from argusrec.objective import PretrainObjective
from argusrec.loader import SequenceDataset, collate
from argusrec.sequences import PreparedData
torch.set_num_threads(2)
cfg = TrainConfig(preset="3m", model={"max_len": 512, "positions": "rotary"}, batch_size=16)
data = PreparedData("/tmp/i4/data")
model = build_model(cfg, data)
obj = PretrainObjective(cfg.objective, model, torch.from_numpy(data.item_counts()).float())
opt = build_optimizer(model, cfg.optim)
ds = SequenceDataset(data, split="train", max_len=512)
full = [i for i in range(len(ds)) if ds.windows[i,3]-ds.windows[i,2]==512][:16]
batch = collate([ds[i] for i in full])
def step():
    obj(model, batch).loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
step()
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU]) as prof:
    t=time.perf_counter(); step(); step(); print("s/step", (time.perf_counter()-t)/2)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
