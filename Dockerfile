# artifactd: one container with the server, C git, and a volume for the data dir.
#
#   docker build -t artifactd .
#   docker run -d -p 8787:8787 -v artifactd-data:/var/lib/artifactd \
#     -e ARTIFACTD_PUBLIC_URL=https://git.example.com artifactd
#   docker exec <container> artifactd api-token create
#
# deploy/check-dockerfile.sh performs these same steps without Docker (a fresh venv, a
# throwaway non-root user) and .ci/run runs it: see docs/deployment.md.

# --- build: the wheel, from the source tree -------------------------------------------
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- run --------------------------------------------------------------------------------
FROM python:3.12-slim
# git is the engine of the data plane; tini reaps git children and forwards SIGTERM.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/artifactd \
      --shell /usr/sbin/nologin artifactd \
 && mkdir -p /var/lib/artifactd \
 && chown artifactd:artifactd /var/lib/artifactd
COPY --from=build /wheels /wheels
# root owns the install, so the server cannot change its own code.
RUN python -m venv /opt/artifactd \
 && /opt/artifactd/bin/pip install --no-cache-dir "$(ls /wheels/artifactd-*.whl)[postgres]" \
 && rm -rf /wheels

# One ENV line per setting: deploy/check-dockerfile.sh reads them.
ENV PATH=/opt/artifactd/bin:$PATH
ENV PYTHONUNBUFFERED=1
ENV ARTIFACTD_HOST=0.0.0.0
ENV ARTIFACTD_PORT=8787
ENV ARTIFACTD_DATA_DIR=/var/lib/artifactd
# The URL clients reach the server at: it goes into every repo's `remote`. Set it to the
# public (proxy) URL when running the container: -e ARTIFACTD_PUBLIC_URL=https://git.example.com
ENV ARTIFACTD_PUBLIC_URL=http://localhost:8787

USER artifactd
WORKDIR /var/lib/artifactd
VOLUME ["/var/lib/artifactd"]
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ARTIFACTD_PORT', '8787'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "artifactd"]
CMD ["serve"]
