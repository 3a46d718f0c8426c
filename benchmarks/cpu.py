"""CPU benchmark of every solver x backend vs softmax and the entmax package (see sparsemap_tools/bench_cpu.py)."""
from sparsemap_tools.bench_cpu import main
raise SystemExit(main())
