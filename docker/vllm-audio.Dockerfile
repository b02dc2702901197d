# vLLM's official OpenAI-compatible server image plus its `audio` extra, which the official image leaves
# out (licensing, see vLLM's "Using Docker" docs) and which audio models (Ultravox, Qwen2-Audio, ...) need
# to decode input_audio. Used by the `vllm` service of docker-compose.yml (profile "gpu").
ARG VLLM_VERSION=0.11.0
FROM vllm/vllm-openai:v${VLLM_VERSION}
ARG VLLM_VERSION
# Same version as the base image, or pip would replace vLLM itself.
RUN uv pip install --system "vllm[audio]==${VLLM_VERSION}"
