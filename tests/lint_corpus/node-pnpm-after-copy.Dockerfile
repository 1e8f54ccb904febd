FROM node:20.11-alpine3.19
RUN corepack enable
WORKDIR /app
COPY . .
RUN --mount=type=cache,id=pnpm,target=/root/.local/share/pnpm/store pnpm install --frozen-lockfile
USER node
CMD ["node", "dist/index.js"]
