# The weft image: the static binary and nothing else, FROM scratch, so no
# base image is pulled. `make image` builds the binary (CGO off) and the
# context this file expects (scripts/image.sh):
#   weft                                  the binary
#   etc/passwd, etc/group                 one non-root user, weft (65532)
#   etc/ssl/certs/ca-certificates.crt     the build host's CA bundle
#   data/                                 the working directory, owned by weft
# One image for every role: `docker run weft:V control`, `… sidecar`, `… run`.
FROM scratch
COPY etc/ /etc/
COPY --chown=65532:65532 data/ /data/
COPY weft /usr/local/bin/weft
USER 65532:65532
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["--help"]
