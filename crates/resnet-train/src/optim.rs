//! Optimisers (placeholder; being written).
