package agent

// wnohang is WNOHANG, which AIX's syscall package does not define
// (sys/wait.h: 0x1).
const wnohang = 0x1
