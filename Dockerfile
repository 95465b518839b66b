# Lambda container image. Python 3.12: the 3.11 base image's glibc is too old for current numpy and
# onnxruntime wheels. Runtime dependencies only (no torch). Build after `make artifacts`:
#   sam build && sam deploy --guided
FROM public.ecr.aws/lambda/python:3.12 AS build
ARG TARGETARCH
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
RUN if [ "$TARGETARCH" = "arm64" ]; then export CFLAGS="-O3 -march=armv8.2-a"; fi \
 && PIP="pip" sh scripts/build_runtime.sh /asset   # 205 MB → 141 MB (docs/results.md §8)

FROM public.ecr.aws/lambda/python:3.12
COPY --from=build /asset ${LAMBDA_TASK_ROOT}
COPY artifacts/models/bi ${LAMBDA_TASK_ROOT}/artifacts/models/bi
COPY artifacts/models/cross ${LAMBDA_TASK_ROOT}/artifacts/models/cross
COPY artifacts/index ${LAMBDA_TASK_ROOT}/artifacts/index
ENV ARTIFACTS_DIR=${LAMBDA_TASK_ROOT}/artifacts
CMD ["handler.lambda_function.handler"]
