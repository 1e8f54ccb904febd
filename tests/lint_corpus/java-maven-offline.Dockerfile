FROM --platform=$BUILDPLATFORM maven:3.9.6-eclipse-temurin-21 AS build
WORKDIR /build
COPY pom.xml .
RUN mvn -B dependency:go-offline
COPY src ./src
RUN mvn -B -o package -DskipTests

FROM eclipse-temurin:21.0.3_9-jre-alpine
RUN addgroup -S app && adduser -S app -G app
USER app
COPY --from=build /build/target/app.jar /opt/app/app.jar
ENTRYPOINT ["java", "-jar", "/opt/app/app.jar"]
