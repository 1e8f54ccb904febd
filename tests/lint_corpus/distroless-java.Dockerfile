FROM --platform=$BUILDPLATFORM eclipse-temurin:21-jdk AS build
WORKDIR /src
COPY gradlew settings.gradle build.gradle ./
COPY gradle ./gradle
RUN ./gradlew --no-daemon dependencies
COPY src ./src
RUN ./gradlew --no-daemon installDist

FROM gcr.io/distroless/java21-debian12:nonroot
COPY --from=build /src/build/install/app /app
ENTRYPOINT ["java", "-cp", "/app/lib/*", "app.Main"]
