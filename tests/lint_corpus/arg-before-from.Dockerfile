ARG NODE_VERSION=20.12.2
ARG ALPINE=3.19
FROM node:${NODE_VERSION}-alpine${ALPINE}
WORKDIR /app
COPY package*.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY . .
USER node
CMD ["node", "server.js"]
