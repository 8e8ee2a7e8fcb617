#!/usr/bin/env bash
# Fetches the Apache Kafka broker (pinned 4.1.1) used by the end-to-end,
# chaos and load runs: the `org.apache.kafka:kafka_2.13` artifact and its
# runtime dependencies from Maven Central, plus an SLF4J binding for its
# logs, collected by Maven into one folder of a cache outside the
# repository. No Docker, no tarball: the JDK (17 or newer) runs it as
# `java -cp '<libs>/*' kafka.Kafka server.properties`
# (waybill-testkit::kafka does).
#
# Prints the libs folder. Idempotent and instant once cached.
#
# WAYBILL_CACHE (default ~/.cache/waybill) chooses the cache directory;
# Maven's own repository goes to $WAYBILL_CACHE/m2.
set -euo pipefail

version=4.1.1
# kafka-server 4.1.1 brings log4j-core 2.24.3 and slf4j-api 1.7.36 but no
# binding between them: without one, every broker log line is dropped. The
# log4j 2.24.3 binding for SLF4J 2 with slf4j-api 2.0.x (which the 1.7
# callers run against unchanged).
log4j=2.24.3
slf4j=2.0.17
cache="${WAYBILL_CACHE:-$HOME/.cache/waybill}"
root="$cache/kafka-$version"
libs="$root/libs"
stamp="$root/.complete"

if [ -f "$stamp" ] && [ -f "$libs/kafka_2.13-$version.jar" ]; then
  echo "$libs"
  exit 0
fi

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "ensure-kafka: '$tool' not found; the Apache Kafka broker needs a JDK 17+ and Maven" >&2
    exit 1
  fi
done

echo "fetching Apache Kafka $version jars into $libs (first time only, ~1 min)..." >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.waybill</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>$log4j</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>$slf4j</version>
    </dependency>
  </dependencies>
</project>
POM
rm -rf "$libs.tmp"
mvn -B -q -f "$work/pom.xml" -Dmaven.repo.local="$cache/m2" \
  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >&2
for jar in "kafka_2.13-$version.jar" "kafka-clients-$version.jar" \
  "log4j-slf4j2-impl-$log4j.jar" "slf4j-api-$slf4j.jar"; do
  if [ ! -f "$libs.tmp/$jar" ]; then
    echo "ensure-kafka: $jar missing from what Maven fetched" >&2
    exit 1
  fi
done
if ls "$libs.tmp" | grep -q '^slf4j-api-1\.'; then
  echo "ensure-kafka: two slf4j-api versions fetched" >&2
  exit 1
fi
rm -rf "$libs"
mv "$libs.tmp" "$libs"
touch "$stamp"
echo "$libs"
