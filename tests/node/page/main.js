// A small React page with the AI SDK's useChat against the service's /api/chat (same origin).
// No JSX, so Vite needs no plugin. The chat id is the page's ?chat=…; a reload re-attaches (resume).
import { useChat } from '@ai-sdk/react';
import { DefaultChatTransport } from 'ai';
import { createElement as h, useState } from 'react';
import { createRoot } from 'react-dom/client';

const chatId = new URLSearchParams(location.search).get('chat') || 'browser-chat';

function textOf(message) {
  return message.parts.filter((part) => part.type === 'text').map((part) => part.text).join('');
}

function Chat({ initial }) {
  const [input, setInput] = useState('');
  const { messages, sendMessage, status, error } = useChat({
    id: chatId,
    messages: initial,
    resume: true,
    transport: new DefaultChatTransport({ api: '/api/chat' }),
  });
  const last = messages[messages.length - 1];
  return h(
    'main',
    null,
    h(
      'ol',
      { id: 'messages' },
      messages.map((m) => h('li', { key: m.id, className: m.role }, textOf(m))),
    ),
    h('p', { id: 'answer' }, last && last.role === 'assistant' ? textOf(last) : ''),
    h('p', { id: 'status' }, status),
    h('p', { id: 'error' }, error ? error.message : ''),
    h(
      'form',
      {
        onSubmit: (event) => {
          event.preventDefault();
          sendMessage({ text: input });
          setInput('');
        },
      },
      h('input', { id: 'prompt', value: input, onChange: (event) => setInput(event.target.value) }),
      h('button', { id: 'send', type: 'submit' }, 'Send'),
    ),
  );
}

// The stored conversation first (404 for a chat never used), then the chat, which resumes on mount.
const response = await fetch(`/api/chat/${chatId}/messages`);
const initial = response.ok ? await response.json() : [];
createRoot(document.getElementById('root')).render(h(Chat, { initial }));
