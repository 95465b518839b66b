# Lambda container image. Python 3.12: the 3.11 base image's glibc is too old for current numpy and
# onnxruntime wheels. Runtime dependencies only (no torch). Build after `make artifacts`:
#   sam build && sam deploy --guided
# Two images: the default (last stage, `local`) carries the index; `--target qdrant` (Stage1=qdrant in
# template.yaml; set DockerBuildTarget: qdrant in its Metadata) carries qdrant-client and no index.
FROM public.ecr.aws/lambda/python:3.12 AS build
RUN dnf install -y gcc-c++ && dnf clean all
# hnswlib has no wheel and compiles with -march=native unless told otherwise: pin a portable target
# per architecture so the image runs on every Lambda host, not only on the build machine's CPU.
ENV HNSWLIB_NO_NATIVE=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY handler handler
COPY model_export model_export
COPY index_build index_build
COPY twostage twostage
COPY scripts scripts
ENV PIP=pip

# The runtime trees, built only for the target asked for: 118 MB on Python 3.11 (docs/results.md §8);
# with qdrant-client 147 MB (§13).
FROM build AS asset-local
ARG TARGETARCH
RUN if [ "$TARGETARCH" = "arm64" ]; then export CFLAGS="-O3 -march=armv8.2-a"; fi \
 && sh scripts/build_runtime.sh /asset

FROM build AS asset-qdrant
ARG TARGETARCH
RUN if [ "$TARGETARCH" = "arm64" ]; then export CFLAGS="-O3 -march=armv8.2-a"; fi \
 && EXTRAS=qdrant sh scripts/build_runtime.sh /asset

FROM public.ecr.aws/lambda/python:3.12 AS models
# bi, cross and (when exported) the rerank cascade's first_pass
COPY artifacts/models ${LAMBDA_TASK_ROOT}/artifacts/models
ENV ARTIFACTS_DIR=${LAMBDA_TASK_ROOT}/artifacts
CMD ["handler.lambda_function.handler"]

# Stage 1 on a Qdrant cluster: the models only.
FROM models AS qdrant
COPY --from=asset-qdrant /asset ${LAMBDA_TASK_ROOT}
ENV TWOSTAGE_STAGE1=qdrant

# Stage 1 in the image (the default target).
FROM models AS local
COPY --from=asset-local /asset ${LAMBDA_TASK_ROOT}
COPY artifacts/index ${LAMBDA_TASK_ROOT}/artifacts/index
