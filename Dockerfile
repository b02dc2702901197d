# voicebot image: the bot, its embedded models (Whisper, SmolLM2, Piper voice ship inside Python
# packages) and the system libraries it needs at run time. No secrets are baked in: API keys are
# read at run time from the env var that `llm.api_key_env` names.
#
#   docker build -t voicebot .
#   docker run --rm voicebot --help
#   docker-compose up            # bot + Ollama, see docker-compose.yml
#
# Two stages: `builder` has the C/C++ toolchain (llama-cpp-python compiles llama.cpp from source)
# and installs voicebot into a virtualenv at /opt/venv; the final stage copies only that virtualenv,
# so compilers and build caches stay out of the image. (Copying the finished venv rather than a
# directory of wheels avoids a second copy of every wheel in an image layer, and needs no BuildKit
# `RUN --mount`, so plain `docker build` and docker-compose 1.x build it too.)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

# llama.cpp is compiled for the build machine's CPU by default (-march=native, as `make setup` does).
# For an image that must run on other CPUs: docker build --build-arg CMAKE_ARGS="-DGGML_NATIVE=OFF" .
ARG CMAKE_ARGS=""
ENV CMAKE_ARGS=${CMAKE_ARGS} \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so editing the code doesn't recompile llama.cpp.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install --upgrade pip \
 && pip install -r /tmp/requirements.txt

# Then voicebot itself, non-editable (package data: personas/*.yaml, moderation/*.yaml|*.txt).
COPY bot ./bot
COPY pipelines ./pipelines
COPY moderation ./moderation
COPY personas ./personas
RUN pip install . \
 && cd / && voicebot personas list

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# Run-time libraries (same as scripts/setup.sh, minus the test tools): PortAudio (sounddevice),
# Opus (Discord voice), libsndfile (soundfile), espeak-ng (phonemizer data), and libgomp1, the
# OpenMP runtime the compiled llama.cpp links against.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libportaudio2 libopus0 libsndfile1 espeak-ng libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# Non-root user (uid/gid 1000, the usual first desktop user, so bind-mounted ./io and ./audits
# stay writable on the host). Its home is writable: onnxruntime keeps a small cache in ~/.cache.
RUN groupadd --gid 1000 voicebot \
 && useradd --uid 1000 --gid voicebot --create-home --shell /usr/sbin/nologin voicebot \
 && mkdir -p /app /data/audits /io \
 && chown voicebot:voicebot /app /data/audits /io

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VOICEBOT_AUDIT__DIR=/data/audits

WORKDIR /app
USER voicebot
VOLUME ["/data/audits"]

ENTRYPOINT ["voicebot"]
CMD ["--help"]
