"""Choice lists shared by the library, the CLI and the service: written once, here.

Imports nothing, so ``embedkit --help`` can build its option lists without loading torch or faiss."""

POOLINGS = ("model", "cls", "pooler", "last-avg", "first-last-avg")
# encoder runtimes (--backend); their classes are in embedkit.runtimes (a lazy name -> "module:Class" map)
RUNTIMES = ("torch", "onnx", "onnx-int8", "onnx-int8-static", "openvino", "openvino-int8", "torch-bf16",
            "openvino-bf16")
DEFAULT_RUNTIME = "torch"
# "auto": the fastest installed runtime within 0.5 Spearman points of fp32, measured on this machine once per
# model and cached (embedkit.runtimes.measure)
AUTO_RUNTIME = "auto"
RUNTIME_CHOICES = (*RUNTIMES, AUTO_RUNTIME)  # what --backend accepts
SERVE_DEFAULT_RUNTIME = AUTO_RUNTIME  # embedkit serve: the fastest runtime within 0.5 Spearman points here
# FAISS presets (a factory string is accepted too); int8 = SQ8 codes, binary = Hamming codes + exact rescoring
BINARY_INDEX_TYPES = ("binary", "binary-hnsw")
INDEX_TYPES = ("flat", "hnsw", "ivf-flat", "ivf-pq", "int8", "hnsw-int8", *BINARY_INDEX_TYPES)
MILVUS_INDEX_TYPES = ("flat", "ivf-flat", "hnsw", "autoindex")
METRICS = ("cosine", "ip", "l2")
SEARCH_MODES = ("dense", "lexical", "hybrid")  # dense vectors, Chinese BM25, or both fused
CORPUS_FORMATS = ("txt", "jsonl", "tsv")
REDUCER_KINDS = ("none", "whitening", "pca", "jl", "auto")
ENGINES = ("local", "ray")
EVAL_PROTOCOLS = ("paper", "fit-train", "fit-valid")
TEXT_NORMALIZATIONS = ("none", "nfkc", "t2s", "s2t")  # query-path text normalisation (--normalize)

REDUCE_HELP = "none | whitening:K[:beta=B,gamma=G] | pca:K | jl:K | jl:auto | auto[:K]"
INDEX_HELP = (f"{' | '.join(INDEX_TYPES)} (int8: 1 byte per dimension, FAISS SQ8; binary: 1 bit per dimension "
              "in RAM, the top k x 10 rescored exactly from vectors memory-mapped on disk), "
              "or a FAISS factory string (e.g. 'IVF256,PQ32'); "
              f"milvus[:{'|'.join(MILVUS_INDEX_TYPES)}] for a Milvus collection (see --milvus-uri).")
SPLIT_MODES = ("passages", "truncate")  # how a document longer than the window is read (--split)
RESULT_UNITS = ("documents", "passages")  # what a search returns (--unit)

#: `embedkit finetune` defaults. lr and batch were chosen by scripts/bench_finetune_grid.py on BQ
#: (finetune_grid_BQ.json: the lowest learning rate within 0.5 Spearman points of the best valid gain at
#: equal compute); 10% warm-up, weight decay 0.01 and max length 64 (the paper's) were not varied, and on
#: 2 CPU cores the time budget, not the epoch count, ends a run.
FINETUNE_DEFAULTS = {"lr": 5e-5, "epochs": 1.0, "batch_size": 16, "max_length": 64, "warmup_ratio": 0.1,
                     "weight_decay": 0.01, "seed": 42, "valid_fraction": 0.1}
