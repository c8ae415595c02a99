# PostgreSQL 15 from Debian on a local base image, for machines that cannot pull the official postgres
# image. It takes the official image's variables: POSTGRES_PASSWORD, POSTGRES_DB, PGDATA, and PGPORT.
ARG BASE_IMAGE=botflow-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      postgresql-15 >/dev/null && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
