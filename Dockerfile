# hello's image: the static binary and nothing else. No shell, no libc, no
# package manager, no /etc: the only layer is the application.
# No "# syntax=" line and no builder stage: both pull images. Build the binary
# with `make go-build` first; `make docker-build` does both.
FROM scratch

# COPY must be the first step after FROM: with any other step first, Debian's
# classic builder (Docker 20.10) fails `--platform linux/arm64` on an amd64 host.
# The file keeps root as owner and 0755, so the process cannot rewrite itself.
COPY hello /hello

# Numeric, because scratch has no /etc/passwd to resolve a name and Kubernetes'
# runAsNonRoot can only verify a number. 65534 is "nobody".
USER 65534:65534

# Documents the default port; $PORT or -addr changes it.
EXPOSE 8080

# The binary probes its own /healthz: there is no curl or wget in scratch.
# It finds the port as the serving hello did, from its arguments (read from
# /proc) and $PORT, so `docker run IMAGE -addr :9090` is probed on 9090.
# A check every 5 s marks a fresh container healthy within about 5 s; the
# probe gives up after 2 s, before this 3 s timeout, and says why.
HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["/hello", "-healthcheck"]

# Exec form: hello is PID 1 and gets `docker stop`'s SIGTERM itself (a shell
# form would need /bin/sh, which scratch does not have). Arguments given to
# `docker run IMAGE ...` become hello's flags.
ENTRYPOINT ["/hello"]

# OCI labels (docker inspect shows them). `make docker-build` passes the
# version and the commit from git, and the repository's address from SOURCE.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE
LABEL org.opencontainers.image.title="hello" \
      org.opencontainers.image.description="A tiny HTTP greeter: GET /{name} answers Hello, {name}!" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
