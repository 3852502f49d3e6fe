"""Choice lists shared by the library, the CLI and the service: written once, here.

Imports nothing, so ``embedkit --help`` can build its option lists without loading torch or faiss."""

POOLINGS = ("model", "cls", "pooler", "last-avg", "first-last-avg")
RUNTIMES = ("torch", "onnx", "onnx-int8")  # encoder execution backends (--backend)
DEFAULT_RUNTIME = "torch"
INDEX_TYPES = ("flat", "hnsw", "ivf-flat", "ivf-pq")  # FAISS presets; a factory string is accepted too
MILVUS_INDEX_TYPES = ("flat", "ivf-flat", "hnsw", "autoindex")
METRICS = ("cosine", "ip", "l2")
CORPUS_FORMATS = ("txt", "jsonl", "tsv")
REDUCER_KINDS = ("none", "whitening", "pca", "jl")
ENGINES = ("local", "ray")
EVAL_PROTOCOLS = ("paper", "fit-train")

REDUCE_HELP = "none | whitening:K | pca:K | jl:K | jl:auto"
INDEX_HELP = (f"{' | '.join(INDEX_TYPES)}, or a FAISS factory string (e.g. 'IVF256,PQ32'); "
              f"milvus[:{'|'.join(MILVUS_INDEX_TYPES)}] for a Milvus collection (see --milvus-uri).")
