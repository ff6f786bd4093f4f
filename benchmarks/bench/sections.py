"""THE list of benchmark sections, in the report's order: what `--only` chooses from, what a
full run measures, and what BENCHMARKS.md shows."""

from __future__ import annotations

from . import data, inference, loader, memory, system, train
from .harness import Section

SECTIONS = (
    Section("gemm", "GEMM peak (the machine's limit)", system.section_gemm, system.render_gemm),
    Section(
        "train",
        "Training step, ours vs the reference RCAN",
        train.section_train,
        train.render_train,
        needs_gemm=True,
    ),
    Section(
        "variants",
        "Training step: memory format, bf16, compile",
        train.section_variants,
        train.render_variants,
        needs_gemm=True,
    ),
    Section(
        "infer",
        "Inference, rcan-paper ×2",
        inference.section_infer,
        inference.render_infer,
        needs_gemm=True,
    ),
    Section(
        "pipeline",
        "Inference, map2 + ×2 pipeline",
        inference.section_pipeline,
        inference.render_pipeline,
        needs_gemm=True,
    ),
    Section(
        "precision",
        "Inference precision: restore --precision",
        inference.section_precision,
        inference.render_precision,
    ),
    Section(
        "compile",
        "Inference with torch.compile",
        inference.section_compile,
        inference.render_compile,
        needs_gemm=True,
    ),
    Section("data", "Data loading vs step time (cpu profile)", data.section_data, data.render_data),
    Section(
        "degrade",
        "Degrading on the fly vs step time (cpu profile)",
        data.section_degrade,
        data.render_degrade,
    ),
    Section(
        "loader",
        "Loader workers and per-patch degradation",
        loader.section_loader,
        loader.render_loader,
    ),
    Section(
        "memory",
        "Training on 200 DIV2K-size photos: peak memory",
        memory.section_memory,
        memory.render_memory,
    ),
    Section(
        "tiled",
        "Tiled restore: wall time and peak memory",
        inference.section_tiled,
        inference.render_tiled,
    ),
    Section("threads", "Threads on a busy machine", system.section_threads, system.render_threads),
    Section("demo", "Demo wall time", system.section_demo, system.render_demo),
    Section(
        "profile", "Profiles: where the time goes", system.section_profile, system.render_profile
    ),
)
BY_NAME = {s.name: s for s in SECTIONS}
