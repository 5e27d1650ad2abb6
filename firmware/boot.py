# Runs first on every start. Kept minimal: a fault here would stop the REPL from coming up.
import gc

gc.threshold(4096)  # collect early and often: small heaps fragment under bursts of allocations
