# Versions of configs, read by seatrial (and abra) — seatrial never executes this file.
export APP_CONF_VERSION=v1

greet() {
  echo "hello from $STACK_NAME"
}
